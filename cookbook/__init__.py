"""Helpers for the LFM2.5 SGLang notebook cookbook: recipes, commands, GPU detection, CLI."""

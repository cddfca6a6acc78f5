"""Code that runs inside an engine's process, not the cookbook's (no imports of `helpers`)."""

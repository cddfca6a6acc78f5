"""Code that runs inside an engine's process: it imports no `cookbook` module."""

"""Temporal workflow code only: deterministic, no I/O."""

"""The domain model and rules: pydantic, pure, no I/O, and nothing of ours imported."""

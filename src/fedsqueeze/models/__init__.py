"""fedsqueeze.models."""

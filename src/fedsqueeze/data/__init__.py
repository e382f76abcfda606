"""fedsqueeze.data."""

"""fedsqueeze.split."""

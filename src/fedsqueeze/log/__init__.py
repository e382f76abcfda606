"""fedsqueeze.log."""

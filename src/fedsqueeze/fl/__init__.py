"""fedsqueeze.fl."""

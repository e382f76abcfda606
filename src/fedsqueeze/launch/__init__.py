"""fedsqueeze.launch."""

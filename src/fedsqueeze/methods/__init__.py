"""Methods with their own server rules (one module each); each registers itself with fedsqueeze.fl.strategy.register_method."""

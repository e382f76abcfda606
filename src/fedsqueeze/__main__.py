"""``python -m fedsqueeze``."""

from .cli import main

raise SystemExit(main())

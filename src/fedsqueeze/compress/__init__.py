"""Compressors (codecs) by id.

>>> from fedsqueeze import compress
>>> "identity" in compress.available()
True
>>> c = compress.from_config({"id": "fp16"})
>>> import numpy as np
>>> enc, _ = c.encode(np.ones(3, np.float32), seed=0)
>>> c.decode(enc).tolist(), enc.nbytes
([1.0, 1.0, 1.0], 12)
"""

from __future__ import annotations

from .base import Compressor, Encoded, ErrorFeedback
from .registry import available, from_config, get_class, register

__all__ = ["Compressor", "Encoded", "ErrorFeedback", "available", "from_config", "get_class",
           "register"]

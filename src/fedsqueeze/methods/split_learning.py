"""Registers the split-learning methods (METHODS.md 5): ``split`` (uncompressed SplitFed, the
baseline) and ``fedlite`` (GPQ-compressed activations with gradient correction).

Both use their own MPI roles (:class:`~fedsqueeze.split.server.SplitServer`,
:class:`~fedsqueeze.split.client.SplitWorker`); the server maths lives in
:class:`~fedsqueeze.split.strategy.SplitStrategy`.

>>> from fedsqueeze.fl.strategy import get_roles
>>> [r.__name__ for r in get_roles("fedlite")]
['SplitServer', 'SplitWorker']
"""

from __future__ import annotations

from ..fl.strategy import register_method
from ..split.client import SplitWorker
from ..split.options import FedLiteOptions, SplitOptions
from ..split.server import SplitServer
from ..split.strategy import SplitStrategy

register_method("split", SplitStrategy, None, SplitOptions, roles=(SplitServer, SplitWorker))
register_method("fedlite", SplitStrategy, None, FedLiteOptions, roles=(SplitServer, SplitWorker))

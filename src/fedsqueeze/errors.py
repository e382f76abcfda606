"""Exception types. Every user-facing failure is a subclass of ``ValueError`` or ``RuntimeError``."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "UnknownCodecError",
    "WireFormatError",
    "LogSchemaError",
    "UpdateRejected",
    "WorkerLost",
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and what is allowed."""


class UnknownCodecError(ConfigError):
    """A codec id is not registered (in a config or on the wire)."""


class WireFormatError(ValueError):
    """A frame or codec payload is malformed; raised before anything is allocated from its lengths."""


class LogSchemaError(ValueError):
    """An HDF5 run log has an unknown encoding type or version."""


class UpdateRejected(ValueError):
    """A decoded client update is unusable (NaN/Inf, norm beyond the configured bound)."""


class WorkerLost(RuntimeError):
    """A client worker rank stopped answering within the configured timeout."""

"""Message kinds. The kind is both the frame header's ``kind`` byte and the MPI tag."""

from __future__ import annotations

import enum


class Kind(enum.IntEnum):
    """Frame kinds of STYLE.md section 4 (values are stable: they are on the wire)."""

    SETUP = 1
    DOWN_MODEL = 2
    DOWN_CTRL = 3
    UP_UPDATE = 4
    UP_CTRL = 5
    SPLIT_ACT = 6
    SPLIT_GRAD = 7
    METRICS = 8
    CONTROL = 9


SYSTEM_CLIENT = 0xFFFFFFFF
"""Client id of orchestration traffic (task lists, metrics, shutdown): excluded from per-client totals."""

UPLINK_KINDS = frozenset({Kind.UP_UPDATE, Kind.UP_CTRL, Kind.SPLIT_ACT})
DOWNLINK_KINDS = frozenset({Kind.DOWN_MODEL, Kind.DOWN_CTRL, Kind.SPLIT_GRAD})


class Flag(enum.IntFlag):
    """Header flag bits."""

    FULL_MODEL = 1
    REPLAY = 2
    DEVICE = 4
    UNCHECKED = 8
    """The payload was not checksummed (the crc32 field is 0): sent by a run with
    ``fl.checksum = false``, and accepted only by receivers configured the same way."""

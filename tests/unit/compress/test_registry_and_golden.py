"""Every registered codec passes the shared checks and decodes its committed golden frame."""

from __future__ import annotations

import pytest

from fedsqueeze import compress
from fedsqueeze.errors import UnknownCodecError

from .common import (check_config_json, check_deterministic, check_golden_frames, check_nbytes,
                     check_repr, check_roundtrip, check_truncation, sample_vector)

IDS = compress.available()


def test_unknown_codec_lists_known_ids():
    with pytest.raises(UnknownCodecError, match="identity"):
        compress.from_config({"id": "nope"})


@pytest.mark.parametrize("codec_id", IDS)
def test_golden_frame(codec_id):
    check_golden_frames(codec_id)


@pytest.mark.parametrize("codec_id", IDS)
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_shared_checks(codec_id, n):
    codec = compress.from_config({"id": codec_id})
    x = sample_vector(n, seed=n)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x)

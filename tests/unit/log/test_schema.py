"""Schema constants, the tree drawn in the module docstring, and row conforming."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.log import schema as S


def test_constants():
    assert S.SCHEMA_NAME == "fedsqueeze-run"
    assert S.SCHEMA_VERSION == "1.0"
    assert S.COMMIT_FIELDS == ("last_round", *S.TABLES)
    assert S.SYSTEM_CLIENT == 0xFFFFFFFF


def bits(dtype: np.dtype) -> str:
    return f"S{dtype.itemsize}" if dtype.kind == "S" else f"{dtype.kind}{8 * dtype.itemsize}"


@pytest.mark.parametrize("table", sorted(set(S.TABLES) - {"setup"}))
def test_docstring_draws_every_column(table):
    """The tree in the module docstring is updated with the schema (STYLE.md section 7)."""
    doc = " ".join(S.__doc__.split())
    assert f"/{table} " in doc
    for name, dtype in S.TABLES[table]:
        assert f"{name} {bits(dtype)}" in doc, f"/{table}/{name} {bits(dtype)} not drawn"


def test_setup_has_comm_columns():
    assert S.TABLES["setup"] == S.TABLES["comm"]
    assert "/setup table, same columns as /comm" in " ".join(S.__doc__.split())


@pytest.mark.parametrize("table", sorted(S.TABLES))
def test_columns_unique_and_round_first(table):
    names = [n for n, _ in S.TABLES[table]]
    assert len(set(names)) == len(names)
    assert names[0] == "round"


@pytest.mark.parametrize(("rows", "expected"), [
    ({"round": 1}, {"round": [1], "bytes": [0]}),
    ({"round": [1, 2], "bytes": 7}, {"round": [1, 2], "bytes": [7, 7]}),
    ({"round": np.array([], int)}, {"round": [], "bytes": []}),
    ({"round": 3.0, "bytes": True}, {"round": [3], "bytes": [1]}),
])
def test_conform_rows(rows, expected):
    got = S.conform_rows("system", S.TABLES["system"], rows)
    assert {k: v.tolist() for k, v in got.items()} == expected
    assert got["round"].dtype == np.uint32
    assert got["bytes"].dtype == np.uint64

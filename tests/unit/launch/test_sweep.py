"""Sweep expansion (product/zip, validation naming the axis), TOML literals, the manifest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedsqueeze.config import Job, load_job, parse_overrides
from fedsqueeze.errors import ConfigError
from fedsqueeze.launch.sweep import (
    expand_sweep,
    flat_overrides,
    parse_sweep,
    read_manifest,
    read_sweep,
    set_args,
    task_logs,
    toml_literal,
    write_manifest,
)

BASE = """
name = "sw"
[data]
name = "digits"
clients = 8
[fl]
rounds = 2
"""


def job_of(tmp_path: Path, sweep: str, base: str = BASE) -> Job:
    path = tmp_path / "sw.toml"
    path.write_text(base + "\n[sweep]\n" + sweep)
    return load_job(path)


def test_product_order_and_names(tmp_path):
    job = job_of(tmp_path, '"compress.up" = [{id = "identity"}, {id = "fp16"}]\n'
                           'seed = [0, 1, 2]\n')
    items = expand_sweep(job)
    assert [it.index for it in items] == list(range(6))
    assert [it.name for it in items] == [f"sw-{i:04d}" for i in range(6)]
    assert [(it.config.compress.up["id"], it.config.seed) for it in items] == [
        ("identity", 0), ("identity", 1), ("identity", 2), ("fp16", 0), ("fp16", 1), ("fp16", 2)]
    assert items[4].overrides == {"compress.up": {"id": "fp16"}, "seed": 1}
    assert all(it.config.data.clients == 8 for it in items)


def test_zip_mode_and_nested_tables(tmp_path):
    job = job_of(tmp_path, 'mode = "zip"\nseed = [3, 4]\n[sweep.data]\nalpha = [0.1, 1.0]\n')
    items = expand_sweep(job)
    assert [(it.config.seed, it.config.data.alpha) for it in items] == [(3, 0.1), (4, 1.0)]
    assert items[1].overrides == {"seed": 4, "data.alpha": 1.0}


def test_no_sweep_is_one_run(tmp_path):
    job = job_of(tmp_path, "")
    (item,) = expand_sweep(job)
    assert item.name == "sw-0000" and item.overrides == {} and parse_sweep(job).ranks == 3


def test_codec_table_replaced_not_merged(tmp_path):
    base = BASE + '[compress]\nup = { id = "topk", rho = 0.2 }\n'
    job = job_of(tmp_path, '"compress.up" = [{id = "identity"}, {id = "topk", rho = 0.5}]\n',
                 base)
    a, b = expand_sweep(job)
    assert a.config.compress.up == {"id": "identity"}
    assert b.config.compress.up["rho"] == 0.5


def test_invalid_value_names_axis_value_and_tasks(tmp_path):
    job = job_of(tmp_path, '"data.alpha" = [0.5, -1.0]\nseed = [0, 1]\n')
    with pytest.raises(ConfigError) as err:
        expand_sweep(job)
    msg = str(err.value)
    assert msg.startswith(f"{job.path}: [sweep] 2 of 4 runs are invalid")
    assert "data.alpha = -1.0" in msg and "[sweep axis data.alpha: tasks 2-3]" in msg


def test_invalid_codec_names_axis(tmp_path):
    job = job_of(tmp_path, '"compress.up" = [{id = "identity"}, {id = "nope"}]\n')
    with pytest.raises(ConfigError, match=r"unknown codec id 'nope'.*sweep axis compress.up: "
                                          r"task 1\]"):
        expand_sweep(job)


def test_unknown_key_in_axis(tmp_path):
    job = job_of(tmp_path, '"train.nosuch" = [1]\n')
    with pytest.raises(ConfigError, match=r"train.nosuch: unknown key .*sweep axis train.nosuch"):
        expand_sweep(job)


@pytest.mark.parametrize(("sweep", "match"), [
    ('seed = 3\n', r"seed = 3: expected a list"),
    ('seed = []\n', r"seed = \[\]: an axis needs at least one value"),
    ('mode = "grid"\nseed = [1]\n', r"mode = 'grid'"),
    ('mode = "zip"\nseed = [1, 2]\n"data.alpha" = [0.1]\n', r"equal length: seed has 2"),
    ('ranks = 1\n', r"ranks = 1: expected an integer >= 2"),
    ('"data" = [{alpha = 0.1}]\n"data.alpha" = [0.2]\n', r"axes 'data' and 'data.alpha' "
                                                          r"overlap"),
    ('seed = [1, 1]\n', r"tasks 0 and 1 resolve to the same config"),
    ('slurm = 3\n', r"expected a table"),
])
def test_sweep_table_errors(tmp_path, sweep, match):
    with pytest.raises(ConfigError, match=match):
        expand_sweep(job_of(tmp_path, sweep))


def test_base_overrides(tmp_path):
    job = job_of(tmp_path, "seed = [0, 1]\n")
    items = expand_sweep(job, base=flat_overrides(["fl.rounds=5"]))
    assert [it.config.fl.rounds for it in items] == [5, 5]
    assert items[0].overrides == {"fl.rounds": 5, "seed": 0}
    with pytest.raises(ConfigError, match="overlaps the sweep axis 'seed'"):
        expand_sweep(job, base={"seed": 3})
    with pytest.raises(ConfigError, match=r"--set fl.rounds: tasks 0-1"):
        expand_sweep(job, base={"fl.rounds": 0})


@pytest.mark.parametrize("value", [
    0, -7, 2**62, 0.1, 1e-300, -2.5, True, False, "qsgd", 'a "quoted" \\ str', "",
    [1, 2, 3], [], {"id": "topk", "rho": 0.01}, {"id": "hdq", "tiers": [2, 4], "ef": True},
    {"nested": {"x": [1.5, "y"]}},
])
def test_toml_literal_round_trip(value):
    assert parse_overrides([f"a.b={toml_literal(value)}"]) == {"a": {"b": value}}


def test_toml_literal_inf_nan():
    assert parse_overrides([f"x={toml_literal(math.inf)}"]) == {"x": math.inf}
    assert math.isnan(parse_overrides([f"x={toml_literal(math.nan)}"])["x"])
    with pytest.raises(ConfigError, match="cannot write"):
        toml_literal(object())


def test_set_args():
    assert set_args({"data.alpha": 0.1, "compress.up": {"id": "fp16"}}) == [
        "--set", "data.alpha=0.1", "--set", 'compress.up={"id" = "fp16"}']


def test_manifest_round_trip(tmp_path):
    job = job_of(tmp_path, '"compress.up" = [{id = "identity"}, {id = "fp16"}]\n'
                           '[sweep.slurm]\ntime = "5"\n')
    items = expand_sweep(job)
    folder = tmp_path / "out"
    path = write_manifest(folder, items, job=job, sweep=parse_sweep(job))
    entries = read_manifest(folder)
    assert path == folder.resolve() / "manifest.json"
    assert [e["name"] for e in entries] == ["sw-0000", "sw-0001"]
    for it, e in zip(items, entries, strict=True):
        assert e == {"index": it.index, "name": it.name, "h5": f"{it.name}.h5",
                     "overrides": it.overrides, "config": f"configs/{it.name}.json"}
        cfg = json.loads((folder / e["config"]).read_text())
        assert cfg["log"] == {**it.config.to_dict()["log"], "out": str(folder.resolve()),
                              "name": it.name}
        assert {**cfg, "log": None} == {**it.config.to_dict(), "log": None}
        # what sweep-task runs: the job copy plus the --set arguments gives the same config
        again = load_job(folder / "job.toml").config(parse_overrides(
            set_args(e["overrides"])[1::2]))
        assert again == it.config
    meta = read_sweep(folder)
    assert meta["ranks"] == 3 and meta["n_tasks"] == 2 and meta["slurm"] == {"time": "5"}
    assert (folder / "logs").is_dir()
    # the same sweep may be written again (re-submission); a different one may not
    write_manifest(folder, items, job=job)
    with pytest.raises(ConfigError, match="already holds a different sweep"):
        write_manifest(folder, items[:1], job=job)


@pytest.mark.parametrize("text", ["{", '{"a": 1}', '[{"index": 0}]'])
def test_read_manifest_rejects_malformed(tmp_path, text):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ConfigError, match="manifest.json"):
        read_manifest(tmp_path)


def test_read_manifest_missing(tmp_path):
    with pytest.raises(ConfigError, match="no sweep manifest"):
        read_manifest(tmp_path)
    (tmp_path / "sweep.json").write_text('{"format": 99}')
    with pytest.raises(ConfigError, match="format 99"):
        read_sweep(tmp_path)


def test_task_logs_orders_attempts(tmp_path):
    for name in ("r-0001.h5", "r-0001.interrupted-12.h5", "r-0001.interrupted-4.h5",
                 "r-0001.interrupted-X.h5", "r-00010.h5", "r-0002.interrupted-3.h5"):
        (tmp_path / name).touch()
    got = [p.name for p in task_logs(tmp_path, {"h5": "r-0001.h5"})]
    assert got == ["r-0001.interrupted-4.h5", "r-0001.interrupted-12.h5", "r-0001.h5"]
    assert task_logs(tmp_path, {"h5": "none.h5"}) == []

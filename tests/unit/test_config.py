"""Every class of config error fails before training with a message naming key, value and what is
allowed (issue: reliability, item 6)."""

from __future__ import annotations

import pytest

from fedsqueeze import config
from fedsqueeze.errors import ConfigError


def test_defaults_validate_and_round_trip_through_json():
    cfg = config.from_dict({})
    again = config.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("data, needles", [
    ({"train": {"bogus": 1}}, ["train.bogus", "unknown key", "lr"]),
    ({"nonsense": {}}, ["nonsense", "unknown key"]),
    ({"train": {"lr": "fast"}}, ["train.lr", "'fast'", "number"]),
    ({"train": {"epochs": 0}}, ["train.epochs", "0", "greater than or equal to 1"]),
    ({"data": {"alpha": -1}}, ["data.alpha", "-1", "greater than 0"]),
    ({"data": {"partition": "weird"}}, ["data.partition", "'weird'", "dirichlet"]),
    ({"sampling": {"fraction": 1.5}}, ["sampling.fraction", "1.5", "less than or equal to 1"]),
    ({"compress": {"up": {"id": "zip"}}}, ["compress.up", "unknown codec id 'zip'", "identity"]),
    ({"compress": {"up": {"id": "fp16", "error_feedback": 3}}}, ["compress.up", "error_feedback"]),
    ({"compress": {"up": {"id": "identity", "level": 3}}}, ["compress.up", "level"]),
], ids=["unknown-key", "unknown-section", "wrong-type", "out-of-range", "negative",
        "not-allowed", "fraction", "unknown-codec", "codec-type", "codec-unknown-arg"])
def test_errors_name_key_value_and_allowed(data, needles):
    with pytest.raises(ConfigError) as e:
        config.from_dict(data, source="jobs/x.toml")
    msg = str(e.value)
    assert msg.startswith("jobs/x.toml: ")
    for n in needles:
        assert n in msg, (n, msg)


def test_unknown_method_lists_the_known_ones():
    from fedsqueeze.fl.strategy import get_method

    with pytest.raises(ConfigError, match="fl.method = 'nope'.*fedavg"):
        get_method("nope", {})


def test_method_options_are_validated():
    from fedsqueeze.fl.strategy import get_method

    with pytest.raises(ConfigError, match="method.x"):
        get_method("fedavg", {"x": 1})


@pytest.mark.parametrize("item, expected", [
    ("train.lr=0.1", {"train": {"lr": 0.1}}),
    ('compress.up={id="qsgd", s=4}', {"compress": {"up": {"id": "qsgd", "s": 4}}}),
    ("data.name=digits", {"data": {"name": "digits"}}),
    ("fl.rounds=3", {"fl": {"rounds": 3}}),
])
def test_overrides_parse_toml_values(item, expected):
    assert config.parse_overrides([item]) == expected


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1"])
def test_bad_overrides(item):
    with pytest.raises(ConfigError):
        config.parse_overrides([item])


def test_override_replaces_codec_table_when_id_changes():
    base = {"compress": {"up": {"id": "qsgd", "s": 4}}}
    out = config.apply_overrides(base, {"compress": {"up": {"id": "topk", "rho": 0.1}}})
    assert out["compress"]["up"] == {"id": "topk", "rho": 0.1}


def test_job_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such job file"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(bad)
    ok = tmp_path / "ok.toml"
    ok.write_text("[train]\nlr = 0.2\n[sweep]\nseed = [0, 1]\n")
    job = config.load_job(ok)
    assert job.sweep == {"seed": [0, 1]}
    assert job.config().train.lr == 0.2 and job.config().name == "ok"


@pytest.mark.parametrize("data, needle", [
    ({"data": {"clients": 5000}}, "more clients than"),
    ({"data": {"partition": "natural"}}, "natural"),
    ({"model": {"name": "nonexistent"}}, "model.name"),
    ({"data": {"name": "nonexistent"}}, "data.name"),
    ({"model": {"name": "cnn1d"}}, "model.name"),
], ids=["too-many-clients", "natural-without-groups", "unknown-model", "unknown-dataset",
        "model-incompatible-with-data"])
def test_world_errors_name_the_key(data, needle):
    from fedsqueeze.fl.world import build_world

    with pytest.raises(ConfigError, match=needle):
        build_world(config.from_dict(data))


def test_more_ranks_than_needed():
    from fedsqueeze.fl.world import build_world, check_ranks

    world = build_world(config.from_dict({"data": {"clients": 3}}))
    check_ranks(world, 4)
    with pytest.raises(ConfigError, match="more ranks than needed"):
        check_ranks(world, 5)

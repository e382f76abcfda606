"""render_sbatch against the golden renders in slurm/golden/ (made by slurm/make_golden.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fedsqueeze.launch.slurm import SlurmOptions, render_sbatch

SLURM = Path(__file__).resolve().parents[3] / "slurm"


def _make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", SLURM / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKE = _make_golden()


@pytest.mark.parametrize("fname", sorted(f"{n}.sbatch" for n in MAKE.CASES))
def test_golden(fname):
    golden = (SLURM / "golden" / fname).read_text()
    assert MAKE.render_cases()[fname] == golden, \
        f"slurm/golden/{fname} is stale: run `python slurm/make_golden.py` and review the diff"


@pytest.mark.parametrize("template", ["sweep.sbatch", "run.sbatch"])
def test_render_keeps_body_and_sorts(template):
    text = (SLURM / template).read_text()
    out = render_sbatch(text, SlurmOptions(partition="p"), job_name="x", output="o", ntasks=4)
    strip = [ln for ln in out.splitlines() if not ln.startswith("#SBATCH")]
    assert strip == [ln for ln in text.splitlines() if not ln.startswith("#SBATCH")]
    sb = [ln for ln in out.splitlines() if ln.startswith("#SBATCH")]
    assert sb == sorted(sb) and "#SBATCH --partition=p" in sb
    # every directive sits before the first command, or sbatch would ignore it
    first_cmd = next(i for i, ln in enumerate(out.splitlines())
                     if ln.strip() and not ln.startswith("#"))
    assert max(i for i, ln in enumerate(out.splitlines()) if ln.startswith("#SBATCH")) < first_cmd


def test_render_without_sbatch_lines_inserts_after_shebang():
    out = render_sbatch("#!/bin/bash\necho hi\n", SlurmOptions(), job_name="x", output="o",
                        ntasks=2)
    lines = out.splitlines()
    assert lines[0] == "#!/bin/bash" and lines[1].startswith("#SBATCH") and lines[-1] == "echo hi"


def test_render_needs_shebang():
    with pytest.raises(ValueError, match="#!"):
        render_sbatch("echo hi\n", SlurmOptions(), job_name="x", output="o", ntasks=2)


def test_templates_are_bash_and_exec_the_runner():
    for name, cmd in (("sweep.sbatch", "sweep-task"), ("run.sbatch", "launch")):
        text = (SLURM / name).read_text()
        assert text.startswith("#!/bin/bash\n")
        # exec: SLURM's --signal=B:... reaches the task runner, not a waiting bash
        assert f'exec "${{FEDSQUEEZE_PYTHON:-python}}" -m fedsqueeze {cmd}' in text

"""`mslseg adapt` stopped half-way (`train.stop_after`, what a job time limit uses) and resumed.

docs/training.md promises that `--resume RUN_DIR` continues from last.pt with the model, optimiser,
RNG states and sample position, and that on the CPU the resumed run ends with bitwise the same
weights as an uninterrupted one. (Ctrl-C, SIGTERM and SIGKILL mid-run: tests/mslseg/test_sigterm.py,
test_adapt_defaults_and_interrupt.py, test_crash_resume.py.)
"""

import json

import pytest
import torch
from typer.testing import CliRunner

from mslseg.checkpoint import load_checkpoint
from mslseg.cli.app import app

runner = CliRunner()


def _steps(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records if "loss_source" in r]


@pytest.mark.slow
def test_adapt_stopped_midway_resumes_to_the_uninterrupted_weights(adapt_cmd, adapted_run, tmp_path):
    out = tmp_path / "cut"
    args = adapt_cmd(out)
    total = int(args[args.index("--iterations") + 1])
    half = total // 2
    r = runner.invoke(app, [*args, "--set", f"train.stop_after={half}"])
    assert r.exit_code == 0, r.output
    assert f"after {half} of {total} iterations; continue with: mslseg adapt --resume" in r.output
    assert load_checkpoint(out / "last.pt")["training"]["iteration"] == half
    assert not (out / "best.pt").exists()  # the final weights are not there yet

    r = runner.invoke(app, args)  # the same command again would start over: refused
    assert r.exit_code == 1 and "--resume" in r.output
    assert load_checkpoint(out / "last.pt")["training"]["iteration"] == half

    r = runner.invoke(app, ["adapt", "--resume", str(out)])
    assert r.exit_code == 0, r.output
    assert f"resumed at iteration {half} of {total}" in r.output
    assert f"after {total} iterations" in r.output
    resumed = load_checkpoint(out / "last.pt")
    ref = load_checkpoint(adapted_run / "last.pt")
    assert resumed["training"]["iteration"] == total
    for key, value in ref["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for key, value in load_checkpoint(adapted_run / "best.pt")["state_dict"].items():
        assert torch.equal(value, load_checkpoint(out / "best.pt")["state_dict"][key]), key
    assert [s["iteration"] for s in _steps(out)] == list(range(1, total + 1))
    assert _steps(out) == _steps(adapted_run)  # the same losses, step by step

"""train -> adapt -> evaluate through the CLI, as a user runs them from the README."""

import json

import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app

runner = CliRunner()


def _common(synth_data):
    return ["--size", "64x32", "--batch", "2", "--set", "train.log_every=1", "--set", "train.checkpoint_every=2"]


@pytest.mark.slow
def test_train_adapt_evaluate(synth_data, tmp_path):
    src = synth_data / "gta5"
    city = synth_data / "cityscapes"
    r = runner.invoke(app, ["train", "-c", "synthetic", "--source", str(src), "--target-val", str(city),
                            "--iterations", "2", "--out", str(tmp_path / "source"), *_common(synth_data)])
    assert r.exit_code == 0, r.output
    assert "target mIoU" in r.output
    cfg = (tmp_path / "source" / "config.yaml").read_text()
    assert "target: null" in cfg  # source only: no target images, not even for BN statistics

    r = runner.invoke(app, ["adapt", "-c", "synthetic", "--init", str(tmp_path / "source" / "best.pt"),
                            "--source", str(src), "--target", str(city), "--target-val", str(city),
                            "--method", "iw-msl", "--multi-level", "--iterations", "2",
                            "--out", str(tmp_path / "adapt"), *_common(synth_data)])
    assert r.exit_code == 0, r.output
    assert "lambda_target: 0.09" in (tmp_path / "adapt" / "config.yaml").read_text()

    r = runner.invoke(app, ["evaluate", str(tmp_path / "adapt" / "best.pt"), "--data", str(city),
                            "--size", "64x32", "--resize-labels", "--out", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert 0 <= scores["miou"] <= 1 and scores["scored_at"] == "64x32"
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000


@pytest.mark.slow
def test_adapt_resume(synth_data, tmp_path):
    args = ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target",
            str(synth_data / "cityscapes"), "--method", "msl", "--iterations", "2", "--out", str(tmp_path / "a"),
            "--set", "target_val=null", *_common(synth_data)]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "--resume" in r.output
    r = runner.invoke(app, ["adapt", "--resume", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output


def test_bad_inputs_are_one_line_errors(synth_data, tmp_path):
    cases = [
        (["train", "-c", "synthetic", "--set", "train.iteratons=3"], "did you mean 'iterations'"),
        (["train", "-c", "no-such-config"], "does not exist"),
        (["adapt", "-c", "synthetic", "--method", "msl", "--set", "target=null"], "needs target data"),
        (["train", "-c", "synthetic", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "missing"),
        (["evaluate", str(tmp_path / "none.pt"), "--data", str(synth_data / "cityscapes")], "does not exist"),
        (["adapt", "--resume", str(tmp_path)], "not a run directory"),
    ]
    for args, needle in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 1, (args, r.output)
        assert needle in r.output, (args, r.output)
        assert "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output

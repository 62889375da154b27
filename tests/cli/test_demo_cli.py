"""`mslseg demo --fast` runs the whole chain: data, source-only, adaptation, evaluation, export, video.

It is a check that every stage runs, and says so: no scores table, no claim about adaptation.
"""

import json

import cv2
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app

runner = CliRunner()


@pytest.mark.slow
def test_demo_fast_writes_everything_it_lists(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--fast"])
    assert r.exit_code == 0, r.output
    assert "does not measure adaptation" in r.output and "chain check done in" in r.output
    assert "gain" not in r.output and "mIoU" not in r.output  # no before/after claim from 10 iterations
    listed = [line.split()[-1] for line in r.output.splitlines() if line.startswith(("source-only", "adapted check",
                                                                                      "training", "scores", "confusion",
                                                                                      "ONNX", "parity", "overlay",
                                                                                      "before/after"))]
    assert len(listed) == 9
    for path in listed:
        assert (out / path).exists() or __import__("pathlib").Path(path).exists(), path
    cap = cv2.VideoCapture(str(out / "video" / "target_overlay.mp4"))
    assert cap.read()[0]
    cap.release()
    assert json.loads((out / "model.parity.json").read_text())["passed"]
    r = runner.invoke(app, ["demo", "--out", str(out), "--fast"])
    assert r.exit_code == 1 and "--overwrite" in r.output

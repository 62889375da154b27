"""`mslseg infer` killed midway leaves only complete files under final names; --resume finishes."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from mslseg.data.synthetic import write_target_video
from tests.helpers import export_labels_onnx, tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    model, meta = tiny_model(4)
    onnx_path = export_labels_onnx(model, meta, root / "m.onnx")
    a = write_target_video(root / "a.mp4", 12, "96x48", 10, seed=1)
    b = write_target_video(root / "b.mp4", 120, "96x48", 10, seed=2)
    return onnx_path, a, b


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.slow
def test_resume_skips_complete_sources_and_keeps_their_rows(setup, tmp_path):
    onnx_path, a, b = setup
    out = tmp_path / "o"
    args = ["infer", str(a), str(b), "--model", str(onnx_path), "--out", str(out), "--codec", "mp4v"]
    assert runner.invoke(app, args + ["--end", "20"]).exit_code == 0
    # as if killed while b was being written: its outputs and marker never appeared
    (out / ".done" / "b.json").unlink()
    (out / "b_overlay.mp4").unlink()
    stamp = (out / "a_overlay.mp4").stat().st_mtime_ns
    r = runner.invoke(app, args + ["--end", "20", "--resume"])
    assert r.exit_code == 0, r.output
    assert "1 source(s) complete from an earlier run" in r.output
    assert (out / "a_overlay.mp4").stat().st_mtime_ns == stamp
    assert _frames(out / "b_overlay.mp4") == 20
    rows = (out / "areas.csv").read_text().splitlines()
    assert sum(line.startswith(str(a)) for line in rows) == 12 and sum(line.startswith(str(b)) for line in rows) == 20
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "--overwrite" in r.output


@pytest.mark.slow
def test_sigkill_leaves_no_torn_file_under_a_final_name(setup, tmp_path):
    onnx_path, a, b = setup
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "mslseg", "infer", str(a), str(b), "--model", str(onnx_path), "--out", str(out),
           "--codec", "mp4v"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    partial = out / ".b_overlay.partial.mp4"
    while time.time() < deadline and proc.poll() is None and not (partial.exists() and partial.stat().st_size):
        time.sleep(0.05)
    time.sleep(0.3)  # now inside b, writing its video, label maps and area rows
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / ".done" / "a.json").exists() and not (out / ".done" / "b.json").exists()
    assert _frames(out / "a_overlay.mp4") == 12  # finished source: complete and playable
    assert len(list((out / "labels" / "a").glob("*.png"))) == 12
    assert not (out / "b_overlay.mp4").exists()  # unfinished: nothing under the final name
    assert not (out / "labels" / "b").exists()
    rows = (out / "areas.csv").read_text().splitlines()
    assert len(rows) == 13 and all(r.startswith(str(a)) for r in rows[1:])  # a's rows, complete
    assert not (out / "summary.json").exists()
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _frames(out / "b_overlay.mp4") == 120
    assert len(list((out / "labels" / "b").glob("*.png"))) == 120
    assert len((out / "areas.csv").read_text().splitlines()) == 1 + 12 + 120
    summary = json.loads((out / "summary.json").read_text())
    assert [s["resumed"] for s in summary["sources"]] == [True, False]
    assert not [p for p in out.rglob(".*partial*")]  # the killed run's partial files were replaced

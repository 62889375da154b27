"""`mslseg infer` stopped by SIGTERM mid-video: clean files, one line with the --resume command,
exit 143; running that command gives the outputs of an uninterrupted run."""

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from mslseg.runtime import infer_job
from tests.runtime import models

ENV = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
runner = CliRunner()
B_FRAMES = 40


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sigterm")
    a = root / "a.mp4"
    b = root / "b.mp4"
    models.write_video(a, n=6)
    models.write_video(b, n=B_FRAMES)
    return models.onnx_model("uint8_labels"), a, b


def _args(model, a, b, out):
    return ["infer", str(a), str(b), "--model", str(model), "--out", str(out), "--codec", "mp4v",
            "--threads", "1", "--batch", "2"]


def _same_outputs(ref, out):
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file() and p.name != "summary.json")
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "summary.json")
    for rel in files:
        if rel.suffix == ".mp4":
            a, b = models.decoded_frames(ref / rel), models.decoded_frames(out / rel)
            assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), rel
        elif rel.parts[0] == ".done":
            assert json.loads((ref / rel).read_text())["frames"] == json.loads((out / rel).read_text())["frames"]
        else:
            assert (ref / rel).read_bytes() == (out / rel).read_bytes(), rel


@pytest.mark.slow
def test_sigterm_at_a_random_frame_closes_the_files_and_resume_finishes_the_same(inputs, tmp_path, monkeypatch):
    """In-process: a real SIGTERM to this process from the frame callback."""
    model, a, b = inputs
    ref = tmp_path / "ref"
    r = runner.invoke(app, _args(model, a, b, ref))
    assert r.exit_code == 0, r.output
    at = random.Random(15).randint(1, B_FRAMES - 10)
    real = infer_job.run_infer

    def run_infer(sources, segmenter, opts, *, on_frame=None, stop=None):
        def frame(report):
            if report.name == str(b) and report.frames == at:
                os.kill(os.getpid(), signal.SIGTERM)
            on_frame(report)

        return real(sources, segmenter, opts, on_frame=frame, stop=stop)

    out = tmp_path / "cut"
    monkeypatch.setattr(infer_job, "run_infer", run_infer)
    r = runner.invoke(app, _args(model, a, b, out))
    assert r.exit_code == 143, r.output
    done = json.loads((out / "summary.json").read_text())["sources"][1]["frames"]
    assert at <= done < B_FRAMES
    assert r.output.splitlines()[-1] == (f"stopped by SIGTERM in {b} after {done} of {B_FRAMES} frames; 1 of 2 "
                                         "source(s) complete; continue with: the same command with --resume")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert (out / ".done" / "a.json").is_file() and not (out / ".done" / "b.json").exists()
    assert len(models.decoded_frames(out / "b_overlay.mp4")) == done  # closed: a playable prefix, redone by --resume
    monkeypatch.undo()
    r = runner.invoke(app, [*_args(model, a, b, out), "--resume"])
    assert r.exit_code == 0, r.output
    _same_outputs(ref, out)


@pytest.mark.slow
def test_sigterm_to_a_real_process_mid_video_then_resume_gives_the_uninterrupted_outputs(inputs, tmp_path):
    model, a, b = inputs
    ref = tmp_path / "ref"
    r = runner.invoke(app, _args(model, a, b, ref))
    assert r.exit_code == 0, r.output

    out = tmp_path / "cut"
    cmd = [sys.executable, "-m", "mslseg", *_args(model, a, b, out)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wanted = random.Random(143).randint(4, B_FRAMES - 15)  # label maps of b written before the signal
    deadline = time.monotonic() + 120
    while (proc.poll() is None and time.monotonic() < deadline
           and len(list((out / "labels").glob(".b.partial/*.png"))) < wanted):
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    done = summary["sources"][1]["frames"]
    assert wanted <= done < B_FRAMES
    head, again = stderr.strip().splitlines()[-1].split("; continue with: ")
    assert head == f"stopped by SIGTERM in {b} after {done} of {B_FRAMES} frames; 1 of 2 source(s) complete"
    assert shlex.split(again) == ["mslseg", *_args(model, a, b, out), "--resume"]
    # a is complete (marker); b stopped: its files closed as a playable prefix, no marker
    assert (out / ".done" / "a.json").is_file() and not (out / ".done" / "b.json").exists()
    assert len(models.decoded_frames(out / "b_overlay.mp4")) == done
    assert len(list((out / "labels" / "b").glob("*.png"))) == done
    assert len((out / "areas.csv").read_text().splitlines()) == 1 + 6 + done
    assert not [p for p in out.rglob("*") if ".partial" in p.name or p.suffix == ".tmp"]

    resumed = subprocess.run([sys.executable, "-m", "mslseg", *shlex.split(again)[1:]], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "(1 source(s) complete from an earlier run)" in resumed.stdout
    _same_outputs(ref, out)

"""run_infer: a stop ends the run with complete files; a failure leaves nothing under final names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import pytest

from mslseg.runtime import Segmenter
from mslseg.runtime.infer_job import InferOptions, run_infer
from mslseg.runtime.io.sources import open_sources
from tests.runtime import models


@pytest.fixture(scope="module")
def seg():
    with Segmenter(models.onnx_model("uint8_labels"), device="cpu", batch_size=2, threads=1) as s:
        yield s


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return models.write_video(tmp_path_factory.mktemp("v") / "clip.mp4", n=20)


def _count(path):
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


def test_stop_closes_files_cleanly(tmp_path, seg, video):
    stop = threading.Event()

    def on_frame(report):
        if report.frames == 5:
            stop.set()

    summary = run_infer(open_sources(str(video)), seg, InferOptions(out=tmp_path / "o", labels="npz"),
                        on_frame=on_frame, stop=stop)
    assert summary.interrupted and 5 <= summary.frames < 20
    assert _count(tmp_path / "o" / "clip_overlay.mp4") == summary.frames
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["interrupted"] is True
    assert len((tmp_path / "o" / "areas.csv").read_text().splitlines()) == summary.frames + 1


def test_failure_leaves_no_partial_or_final_files(tmp_path, seg, video):
    def on_frame(report):
        if report.frames == 3:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        run_infer(open_sources(str(video)), seg, InferOptions(out=tmp_path / "o"), on_frame=on_frame)
    assert [p for p in (tmp_path / "o").rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_ctrl_c_in_the_cli_finishes_the_batch_and_exits_130(tmp_path):
    video = models.write_video(tmp_path / "long.mp4", n=300)
    out = tmp_path / "o"
    model = models.onnx_model("uint8_labels")
    cmd = [sys.executable, "-m", "mslseg", "infer", str(video), "--model", str(model), "--out", str(out),
           "--threads", "1", "--batch", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not list((out / "labels").glob(".long.partial/*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    frames = json.loads((out / "summary.json").read_text())["frames"]
    assert 0 < frames < 300 and _count(out / "long_overlay.mp4") == frames
    assert len(list((out / "labels" / "long").glob("*.png"))) == frames
    assert not [p for p in out.rglob("*") if ".partial" in p.name]

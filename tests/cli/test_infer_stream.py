"""`mslseg infer` on a live MJPEG-over-HTTP stream that stalls, goes away and comes back."""

from __future__ import annotations

import json
import shutil
import time

import cv2
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from tests.runtime import models
from tests.runtime.mjpeg_server import MjpegServer

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    shutil.copy(models.onnx_model("uint8_labels"), path)
    return path


def _infer(url, model, out, *args):
    t0 = time.monotonic()
    result = runner.invoke(app, ["infer", url, "--model", str(model), "--out", str(out), "--threads", "1",
                                 *map(str, args)])
    return result, time.monotonic() - t0


def _frames_in(path):
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


def _kept(out):
    """Frame numbers of the label maps written, after checking the overlay holds as many frames."""
    (video,) = out.glob("*_overlay.mp4")
    stem = video.name.removesuffix("_overlay.mp4")
    indices = sorted(int(p.stem) for p in (out / "labels" / stem).glob("*.png"))
    assert _frames_in(video) == len(indices) > 0
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    return indices


def test_a_stream_that_stalls_for_good_ends_after_the_timeout(tmp_path, model):
    out = tmp_path / "out"
    with MjpegServer() as server:
        server.stall_after(15)
        result, seconds = _infer(server.url, model, out, "--stall-timeout", "1")
    assert result.exit_code == 3, result.output
    assert seconds < 12  # model load, 15 frames, the 1 s timeout; not FFmpeg's own 30 s
    kept = _kept(out)
    lines = result.output.strip().splitlines()
    assert "live: no-frame timeout 1 s, reconnect 0" in lines[0]
    assert lines[-1] == (f"stream {server.url} stopped delivering frames at frame 15 (no frame for 1 s); "
                         f"no reconnect attempts were asked for; kept {len(kept)} frames in {out}")
    source = json.loads((out / "summary.json").read_text())["sources"][0]
    assert source["frames"] == len(kept) and source["live"]["stopped"] in lines[-1]


@pytest.mark.slow
def test_a_stream_back_within_the_reconnect_window_keeps_going(tmp_path, model):
    """Gone after 12 frames, back 1.5 s later: frames of both sessions end up in the outputs."""
    out = tmp_path / "out"
    with MjpegServer() as server:
        server.drop_after(12, down_s=1.5)
        result, _ = _infer(server.url, model, out, "--stall-timeout", "1", "--reconnect", "3", "--end", "40")
        assert server.session == 1
    assert result.exit_code == 0, result.output
    kept = _kept(out)
    assert min(kept) < 12 and max(kept) >= 12 and len(set(kept)) == len(kept)
    assert "reconnect 1 of 3 in 1 s" in result.output and "reconnected; frames continue at 12" in result.output
    assert "live: no-frame timeout 1 s, reconnect 3, 1 reconnect(s) made" in result.output


def test_reconnect_0_closes_the_outputs_at_the_first_outage(tmp_path, model):
    out = tmp_path / "out"
    with MjpegServer() as server:
        server.drop_after(10, down_s=0.5)  # back soon, but no reconnect was asked for
        result, _ = _infer(server.url, model, out, "--stall-timeout", "5", "--reconnect", "0")
    assert result.exit_code == 3, result.output
    kept = _kept(out)
    assert result.output.strip().splitlines()[-1] == (
        f"stream {server.url} stopped delivering frames at frame 10 (the stream ended); "
        f"no reconnect attempts were asked for; kept {len(kept)} frames in {out}")
    assert "reconnect 1 of" not in result.output

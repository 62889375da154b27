"""`mslseg infer` end to end: outputs that play and read back, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from tests.runtime import models

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    shutil.copy(models.onnx_model("uint8_labels"), path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return models.write_video(tmp_path_factory.mktemp("video") / "clip.mp4", n=20)


def _infer(*args):
    return runner.invoke(app, ["infer", *map(str, args), "--threads", "1"])


def _frames_in(path):
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


def _one_line_error(result, needle):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert "Traceback" not in result.output


def _no_partials(folder):
    assert not [p for p in folder.rglob("*") if ".partial" in p.name]


def test_video_to_overlay_labels_areas_summary(tmp_path, model, video):
    out = tmp_path / "out"
    result = _infer(video, "--model", model, "--out", out, "--batch", "4")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("20 frames at native (the model records no training size) in") and "FPS" in result.output and "infer" in result.output
    assert _frames_in(out / "clip_overlay.mp4") == 20
    pngs = sorted((out / "labels" / "clip").glob("*.png"))
    assert len(pngs) == 20 and cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape == (64, 96)
    assert len((out / "areas.csv").read_text().splitlines()) == 21
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 20 and summary["sources"][0]["problems"] == []
    assert set(summary["stage_ms"]) == {"decode", "pre", "infer", "post", "encode"}
    _no_partials(out)


def test_h264_overlay_plays_in_browsers(tmp_path, model, video):
    av = pytest.importorskip("av")
    out = tmp_path / "out"
    assert _infer(video, "--model", model, "--out", out, "--labels", "none", "--codec", "h264").exit_code == 0
    with av.open(str(out / "clip_overlay.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    assert not (out / "labels").exists()


def test_npz_stride_range_and_json_areas(tmp_path, model, video):
    out = tmp_path / "out"
    result = _infer(video, "--model", model, "--out", out, "--labels", "npz", "--stride", "3",
                    "--start", "2", "--end", "1.5s", "--areas", "json")
    assert result.exit_code == 0, result.output
    with np.load(out / "labels" / "clip.npz") as data:
        assert list(data["frame_index"]) == [2, 5, 8, 11, 14]
        assert data["frame_000005"].shape == (64, 96)
    rows = [json.loads(line) for line in (out / "areas.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == [2, 5, 8, 11, 14]
    assert _frames_in(out / "clip_overlay.mp4") == 5


def test_existing_output_folder_needs_overwrite(tmp_path, model, video):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    _one_line_error(_infer(video, "--model", model, "--out", out), "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    result = _infer(video, "--model", model, "--out", out, "--overwrite", "--end", "4")
    assert result.exit_code == 0, result.output
    assert len(list((out / "labels" / "clip").glob("*.png"))) == 4


def test_missing_and_corrupt_video(tmp_path, model):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 500)
    for source, needle in [(tmp_path / "missing.mp4", "does not exist"), (junk, "cannot decode")]:
        out = tmp_path / "out"
        _one_line_error(_infer(source, "--model", model, "--out", out), needle)
        assert not out.exists()


def test_truncated_video_processes_what_decodes(tmp_path, model):
    full = models.write_video(tmp_path / "full.mkv", n=20)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    out = tmp_path / "out"
    result = _infer(cut, "--model", model, "--out", out)
    _one_line_error(result, "decoding stopped at frame")
    n = json.loads((out / "summary.json").read_text())["frames"]
    assert 0 < n < 20 and _frames_in(out / "cut_overlay.mp4") == n
    _no_partials(out)


def test_unreadable_image_among_good_ones(tmp_path, model):
    images = tmp_path / "images"
    images.mkdir()
    for i, f in enumerate(models.frames(2, (40, 50))):
        cv2.imwrite(str(images / f"good{i}.png"), f)
    (images / "bad.jpg").write_bytes(b"broken")
    out = tmp_path / "out"
    _one_line_error(_infer(images, "--model", model, "--out", out), "bad.jpg: not a readable image, skipped")
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["good0.jpg", "good1.jpg"]
    assert sorted(p.name for p in (out / "labels" / "images").iterdir()) == ["good0.png", "good1.png"]


def test_unknown_and_missing_model(tmp_path, video):
    weird = tmp_path / "model.tflite"
    weird.write_bytes(b"x")
    out = tmp_path / "out"
    _one_line_error(_infer(video, "--model", weird, "--out", out), ".onnx, .engine, .plan, .pt")
    _one_line_error(_infer(video, "--model", tmp_path / "none.onnx", "--out", out), "does not exist")
    assert not out.exists() or not any(out.iterdir())


def test_show_without_display_is_refused(tmp_path, model, video, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = _infer(video, "--model", model, "--out", tmp_path / "o", "--show")
    _one_line_error(result, "--show needs a display")


def test_usage_errors_exit_2(model, video):
    assert runner.invoke(app, ["infer", str(video), "--model", str(model), "--labels", "tiff"]).exit_code == 2
    assert runner.invoke(app, ["infer", str(video)]).exit_code == 2

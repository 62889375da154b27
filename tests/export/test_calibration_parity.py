"""Calibration frames from folders, dataset roots and videos; the parity gate and its .failed file."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mslseg.export import check_parity, load_frames, synthetic_frames
from mslseg.export.parity import failed_path, report_path
from mslseg.runtime.errors import DataError, ExportError, InputError
from tests.export.conftest import make_model


def _write_images(folder, n, size="60x40", value=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(synthetic_frames(n, size, seed=n)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f if value is None else np.full_like(f, value))


def _write_video(path, n, size=(40, 60)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size[1], size[0]))
    for i in range(n):
        writer.write(np.full((*size, 3), i * 10, np.uint8))
    writer.release()


def test_image_folder_resized(tmp_path):
    _write_images(tmp_path / "imgs", 5)
    frames = load_frames([tmp_path / "imgs"], 3, size="48x32")  # WIDTHxHEIGHT
    assert len(frames) == 3 and all(f.shape == (32, 48, 3) and f.dtype == np.uint8 for f in frames)
    assert {f.shape for f in load_frames([tmp_path / "imgs"], 2, max_side=32)} == {(24, 32, 3)}


def test_dataset_root_takes_images_not_labels(tmp_path):
    _write_images(tmp_path / "gta" / "images", 4, value=200)
    _write_images(tmp_path / "gta" / "labels", 4, value=7)
    frames = load_frames([tmp_path / "gta"], 10)
    assert len(frames) == 4 and all(f.min() == 200 for f in frames)


def test_frames_are_sampled_across_videos_and_images(tmp_path):
    _write_video(tmp_path / "a.avi", 20)
    _write_video(tmp_path / "b.avi", 20)
    cv2.imwrite(str(tmp_path / "still.png"), np.zeros((40, 60, 3), np.uint8))
    frames = load_frames([tmp_path / "a.avi", tmp_path / "b.avi", tmp_path / "still.png"], 6)
    assert len(frames) == 6
    means = [float(f.mean()) for f in frames]
    assert means[0] < 15 and means[-1] < 1  # first frame of a.avi ... the still image
    assert len({round(m, -1) for m in means}) >= 4  # spread over both videos, not their first frames
    folder = tmp_path / "videos"
    folder.mkdir()
    _write_video(folder / "c.avi", 8)
    assert len(load_frames([folder], 4)) == 4


@pytest.mark.parametrize("make,match", [
    (lambda p: p.mkdir(), "no images or videos"),
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("x"), "neither an image"),
])
def test_bad_sources(tmp_path, make, match):
    src = tmp_path / "src"
    make(src)
    with pytest.raises(DataError, match=match):
        load_frames([src], 4)
    with pytest.raises(InputError):
        load_frames([], 4)


def test_failed_gate_keeps_the_model_under_a_failed_name(model_meta, labels_onnx, frames, tmp_path):
    model, _ = model_meta
    path = tmp_path / "model.onnx"
    path.write_bytes(labels_onnx.read_bytes())
    other, _ = make_model(seed=1)  # a different network: labels disagree
    with pytest.raises(ExportError, match="parity gate failed") as err:
        check_parity(path, other, frames)
    assert "model.failed.onnx" in str(err.value)
    assert not path.exists() and failed_path(path).exists()
    report = json.loads(report_path(failed_path(path)).read_text())
    assert report["passed"] is False and report["label_agreement"] < 0.999
    assert not report_path(path).exists()
    # the same file passes against its own network; a stricter gate is settable
    ok = check_parity(failed_path(path), model, frames, write=False)
    assert ok.passed and ok.label_agreement > 0.999
    with pytest.raises(InputError, match="share of pixels"):
        check_parity(failed_path(path), model, frames, gate=99.0)

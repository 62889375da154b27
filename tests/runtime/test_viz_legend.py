"""The overlay `mslseg infer` writes: class outlines and a legend strip of the classes in the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mslseg.runtime.errors import InputError
from mslseg.runtime.infer_job import InferOptions, run_infer
from mslseg.runtime.io.sources import open_sources
from mslseg.runtime.io.viz import boundaries, legend_height, legend_strip, overlay, palette_lut
from mslseg.runtime.segmenter import Segmenter
from tests.runtime import models

NAMES = ("road", "building", "sky", "car")
PALETTE = ((128, 64, 128), (70, 70, 70), (70, 130, 180), (0, 0, 142))
LUT = palette_lut(PALETTE, "bgr")


def _scene(w: int, h: int, classes: tuple[int, ...]) -> np.ndarray:
    """Vertical bands, one per class, widest first."""
    labels = np.zeros((h, w), np.uint8)
    edges = np.linspace(0, w, len(classes) + 1).astype(int)
    for c, x0, x1 in zip(classes, edges, edges[1:], strict=False):
        labels[:, x0:x1] = c
    return labels


def _has_colour(img: np.ndarray, colour: np.ndarray) -> bool:
    return bool((img == colour).all(-1).sum() >= 4)


def test_boundaries_are_one_pixel_lines_between_labels():
    labels = np.zeros((4, 6), np.uint8)
    labels[:, 3:] = 2
    edge = boundaries(labels)
    assert edge.dtype == np.uint8 and edge[:, 3].all() and edge.sum() == 4 * 255
    assert boundaries(labels.astype(np.uint16)).sum() == edge.sum()
    assert (boundaries(labels, 3) > 0).sum() == 4 * 3


@pytest.mark.parametrize("size", [(128, 64), (256, 128), (1024, 512)])
def test_overlay_appends_a_legend_of_the_classes_present(size):
    w, h = size
    frame = np.full((h, w, 3), 90, np.uint8)
    labels = _scene(w, h, (0, 1, 3))  # no sky
    picture = overlay(frame, labels, LUT, 0.5, names=NAMES, outline=True)
    assert picture.shape == (h + legend_height(len(NAMES), w, h), w, 3)
    assert np.array_equal(picture[:h], overlay(frame, labels, LUT, 0.5, outline=True))
    strip = picture[h:]
    for c in (0, 1, 3):
        assert _has_colour(strip, LUT[c]), NAMES[c]
    assert not _has_colour(strip, LUT[2])
    assert (picture[:h][boundaries(labels) > 0] == 0).all()  # the outline is drawn black


def test_the_picture_size_does_not_depend_on_the_classes_present():
    frame = np.zeros((64, 128, 3), np.uint8)
    names = tuple(f"class number {i}" for i in range(19))
    lut = palette_lut(tuple((10 * i, 255 - 10 * i, 40) for i in range(19)))
    shapes = {overlay(frame, _scene(128, 64, classes), lut, names=names).shape
              for classes in ((0,), (0, 5), tuple(range(19)))}
    assert len(shapes) == 1
    assert legend_height(names, 128, 64) <= 64  # a tiny frame: the strip is at most the frame's height


def test_classes_that_do_not_fit_are_the_smallest_and_counted():
    names = tuple(f"a long class name {i}" for i in range(12))
    lut = palette_lut(tuple((20 * i, 250 - 20 * i, 100) for i in range(12)))
    strip = legend_strip(list(range(12)), names, lut, 128, rows=3)
    assert strip.shape[1] == 128 and _has_colour(strip, lut[0])  # the first in priority order is shown
    assert not _has_colour(strip, lut[11])  # the last is dropped (and counted in "+N more")
    with pytest.raises(InputError, match="rows"):
        legend_strip([0], names, lut, 128, rows=0)


def test_legend_ignores_labels_past_the_names():
    frame = np.zeros((32, 64, 3), np.uint8)
    labels = _scene(64, 32, (0, 255))  # an ignore label
    assert overlay(frame, labels, LUT, names=NAMES).shape[0] == 32 + legend_height(NAMES, 64, 32)


def test_infer_writes_the_legend_under_the_video(tmp_path):
    video = models.write_video(tmp_path / "clip.mp4", n=4, size=(64, 96))
    with Segmenter(models.onnx_model("uint8_labels"), device="cpu", threads=1) as seg:
        run_infer(open_sources(str(video)), seg, InferOptions(out=tmp_path / "o", labels="none", areas="none"))
        names = seg.meta.class_names
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip_overlay.mp4"))
    ok, first = cap.read()
    cap.release()
    assert ok and first.shape[:2] == (64 + legend_height(names, 96, 64), 96)

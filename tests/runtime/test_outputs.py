"""Overlay video writers, label maps, area tables and colours: readable, complete, crash-safe."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mslseg.runtime.errors import InputError
from mslseg.runtime.io.result_writers import AreaTable, LabelNpz, LabelPngFolder
from mslseg.runtime.io.video_writer import h264_available, open_video_writer
from mslseg.runtime.io.viz import colorize, legend, legend_strip, overlay, palette_lut
from tests.runtime import models


def _count(path):
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_video_writer_is_playable_and_atomic(tmp_path, codec):
    if codec == "h264" and not h264_available():
        pytest.skip("PyAV with libx264 is not installed")
    path = tmp_path / "o.mp4"
    writer = open_video_writer(path, 12.5, (33, 47), codec)  # odd size: padded for H.264
    for f in models.frames(6, (33, 47)):
        writer.write(f)
    assert not path.exists()
    writer.close()
    assert _count(path) == 6 and list(tmp_path.iterdir()) == [path]
    writer = open_video_writer(tmp_path / "aborted.mp4", 10, (32, 32), codec)
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.abort()
    assert list(tmp_path.iterdir()) == [path]
    with pytest.raises(InputError, match="differs"):
        open_video_writer(tmp_path / "x.mp4", 10, (32, 32), codec).write(np.zeros((8, 8, 3), np.uint8))


def test_h264_is_what_auto_picks_when_available(tmp_path):
    writer = open_video_writer(tmp_path / "a.mp4", None, (16, 16))
    assert writer.codec == ("h264" if h264_available() else "mp4v")
    writer.abort()


def test_label_png_folder_and_npz_round_trip(tmp_path):
    meta = models.meta()
    labels = [np.random.default_rng(i).integers(0, 4, (20, 30), dtype=np.uint8) for i in range(3)]
    pngs = LabelPngFolder(tmp_path / "labels" / "clip")
    npz = LabelNpz(tmp_path / "clip.npz", meta)
    for i, lab in enumerate(labels):
        pngs.write(f"{i:06d}", lab)
        npz.write(i * 2, lab)
    assert not (tmp_path / "labels" / "clip").exists() and not (tmp_path / "clip.npz").exists()
    pngs.close(), npz.close()
    for i, lab in enumerate(labels):
        png = tmp_path / "labels" / "clip" / f"{i:06d}.png"
        assert np.array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), lab)
    with np.load(tmp_path / "clip.npz") as data:
        assert list(data["frame_index"]) == [0, 2, 4]
        assert np.array_equal(data["frame_000004"], labels[2])
        assert tuple(data["class_names"]) == meta.class_names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.npz", "labels"]


def test_uint16_labels_png(tmp_path):
    lab = np.array([[0, 300], [65535, 7]], np.uint16)
    folder = LabelPngFolder(tmp_path / "l")
    folder.write("a", lab)
    folder.close()
    assert np.array_equal(cv2.imread(str(tmp_path / "l" / "a.png"), cv2.IMREAD_UNCHANGED), lab)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_area_table(tmp_path, fmt):
    table = AreaTable(tmp_path / f"areas.{fmt}", models.meta(), fmt)
    table.write("clip.mp4", 3, 0.3, "", np.array([0.5, 0.25, 0.25, 0.0]))
    table.abort()
    assert not list(tmp_path.iterdir())
    table = AreaTable(tmp_path / f"areas.{fmt}", models.meta(), fmt)
    table.write("clip.mp4", 3, 0.3, "", np.array([0.5, 0.25, 0.25, 0.0]))
    table.close()
    text = (tmp_path / f"areas.{fmt}").read_text()
    assert ("class_0,class_1" in text) if fmt == "csv" else ('"class_1": 0.25' in text)


def test_colours_follow_the_palette():
    meta = models.meta()
    lut = palette_lut(meta, "rgb")
    labels = np.array([[0, 1], [3, 255]], np.uint8)
    img = colorize(labels, lut)
    assert tuple(img[0, 1]) == meta.palette[1] and tuple(img[1, 1]) == (0, 0, 0)
    assert tuple(colorize(labels, palette_lut(meta, "bgr"))[0, 1]) == meta.palette[1][::-1]
    frame = np.full((2, 2, 3), 100, np.uint8)
    assert np.array_equal(overlay(frame, labels, lut, 0.0), frame)
    assert np.array_equal(overlay(frame, labels, lut, 1.0), img)
    assert legend(meta).shape[0] == 20 * meta.num_classes
    with pytest.raises(InputError):
        overlay(frame, labels[:1], lut)


@pytest.mark.parametrize("classes, width", [((0, 2, 10, 13), 640), (tuple(range(19)), 512),
                                            (tuple(range(19)), 1280), (tuple(range(19)), 256)])
def test_the_legend_strip_spreads_its_entries_over_its_width(classes, width):
    from collections import Counter

    from mslseg.classes import default_class_names

    names = default_class_names(19)  # the Cityscapes names: "traffic light" beside "sky"
    lut = palette_lut(tuple((10 * i, 255 - 10 * i, 40) for i in range(19)))  # no grey: text is never a swatch
    strip = legend_strip(list(classes), names, lut, width)
    where = {c: np.argwhere((strip == lut[c]).all(-1)).min(0) for c in classes}  # (row, x) of each swatch
    rows = Counter(int(y) for y, _ in where.values())
    columns = sorted({int(x) for _, x in where.values()})
    per_row = [rows[y] for y in sorted(rows)]
    assert all(n == len(columns) for n in per_row[:-1]), per_row  # a grid: entries share their columns
    assert len(classes) > (len(columns) - 1) * len(per_row), per_row  # no column to spare: no lone last entry
    assert columns[-1] >= width // 2 or len(columns) == 1  # spread over the width, not packed to the left
    gaps = np.diff(columns)
    assert len(gaps) == 0 or gaps.max() - gaps.min() <= 1  # equal columns
    assert width - columns[-1] <= 2 * (columns[1] - columns[0] if len(columns) > 1 else width)

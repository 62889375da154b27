"""Unlabelled target frames from real video files written with OpenCV."""

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mslseg.data import build_dataset
from mslseg.data.config import DataConfig
from mslseg.data.video_frames import frame_positions
from mslseg.runtime.errors import ConfigError
from tests.mslseg.test_data_helpers import NORM

FRAMES = 20


def _write_clip(path: Path, n: int = FRAMES, size=(64, 32)) -> Path:
    """Frame k is a flat grey of value 10 * k + 20, so a decoded frame tells its number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    assert writer.isOpened()
    for k in range(n):
        writer.write(np.full((size[1], size[0], 3), 10 * k + 20, np.uint8))
    writer.release()
    return path


def _frame_number(item) -> int:
    grey = float(item["image"][1].mean()) + NORM.mean[1]  # G channel, un-normalised
    return round((grey - 20) / 10)


def test_every_kth_frame_decoded_by_seeking(tmp_path):
    clip = _write_clip(tmp_path / "clip.mp4")
    ds = build_dataset(DataConfig(kind="video", root=str(clip), video_stride=5), NORM, train=False)
    assert len(ds) == 4 and ds.labelled is False
    items = [ds[i] for i in (3, 0, 2)]  # out of order: each item seeks
    assert [it["name"] for it in items] == ["clip.mp4#000015", "clip.mp4#000000", "clip.mp4#000010"]
    assert [_frame_number(it) for it in items] == [15, 0, 10]
    assert all("label" not in it and it["image"].shape == (3, 32, 64) for it in items)


def test_n_frames_spread_over_each_file_in_a_folder_and_glob(tmp_path):
    _write_clip(tmp_path / "a.mp4")
    _write_clip(tmp_path / "b.avi", n=10)
    (tmp_path / "notes.txt").write_text("not a video")
    cfg = DataConfig(kind="video", root=str(tmp_path), video_frames=3, size=(32, 16))
    ds = build_dataset(cfg, NORM, train=True)
    assert [ds[i]["name"] for i in range(len(ds))] == [
        "a.mp4#000000", "a.mp4#000010", "a.mp4#000019", "b.avi#000000", "b.avi#000004", "b.avi#000009"]
    assert ds[1]["image"].shape == (3, 16, 32)
    assert _frame_number(build_dataset(cfg, NORM, train=False)[2]) == 19
    globbed = build_dataset(DataConfig(kind="video", root=str(tmp_path / "*.mp4"), video_frames=2), NORM,
                            train=False)
    assert len(globbed) == 2


def test_video_dataset_pickles_for_workers_and_batches(tmp_path):
    clip = _write_clip(tmp_path / "clip.mp4")
    ds = build_dataset(DataConfig(kind="video", root=str(clip), video_stride=4, limit=3), NORM, train=False)
    ds[0]  # opens a capture, which must not be pickled
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == 3 and torch.equal(clone[1]["image"], ds[1]["image"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 64)


def test_worker_forked_after_the_parent_read_a_frame_does_not_hang(tmp_path):
    clip = _write_clip(tmp_path / "clip.mp4")
    ds = build_dataset(DataConfig(kind="video", root=str(clip), video_stride=5), NORM, train=False)
    first = ds[0]  # the parent now holds an open capture; a forked worker must not use it
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, timeout=60)
    batch = next(iter(loader))
    assert batch["image"].shape[0] == 4 and torch.equal(batch["image"][0], first["image"])


def test_frame_positions():
    assert frame_positions(10, 3, None) == [0, 3, 6, 9]
    assert frame_positions(10, 3, 2) == [0, 9]
    assert frame_positions(3, 1, 10) == [0, 1, 2]
    with pytest.raises(ConfigError):
        frame_positions(10, 0, None)
    with pytest.raises(ConfigError):
        frame_positions(10, 1, 0)

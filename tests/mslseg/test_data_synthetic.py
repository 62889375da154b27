"""The synthetic two-domain generator: deterministic, any size, real classes, a real domain shift."""

import cv2
import numpy as np
import pytest

from mslseg.classes import CITYSCAPES_ID_TO_TRAIN
from mslseg.data import build_dataset
from mslseg.data.config import DataConfig
from mslseg.data.synthetic import (
    SYNTHETIC_LABEL_IDS,
    generate_scene,
    write_cityscapes_layout,
    write_gta5_layout,
    write_synthetic_dataset,
    write_target_video,
)  # fmt: skip
from mslseg.runtime.errors import InputError
from mslseg.runtime.sizes import Size
from tests.mslseg.test_data_helpers import NORM

SIZE = "64x32"  # (width x height)


def test_same_seed_same_scene_other_seed_other_scene():
    for domain in ("source", "target"):
        a = generate_scene(np.random.default_rng(7), domain, SIZE)
        b = generate_scene(np.random.default_rng(7), domain, SIZE)
        c = generate_scene(np.random.default_rng(8), domain, SIZE)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("size", [Size(64, 32), Size(100, 60), Size(256, 128)])
def test_any_size_and_dtypes(size):
    image, label = generate_scene(np.random.default_rng(0), "target", size)
    assert image.shape == (size.height, size.width, 3) and image.dtype == np.uint8
    assert label.shape == size.hw and label.dtype == np.uint8


def test_labels_are_cityscapes_ids_of_many_classes():
    labels = np.stack([generate_scene(np.random.default_rng(i), "source", "128x64")[1] for i in range(6)])
    present = set(np.unique(labels).tolist())
    assert present <= set(SYNTHETIC_LABEL_IDS) and present <= set(CITYSCAPES_ID_TO_TRAIN)
    assert len(present) >= 8
    assert {7, 8, 11, 23, 26} <= present  # road, sidewalk, building, sky, car
    # the layout is shared: sky on top, road at the bottom centre, in both domains
    for domain in ("source", "target"):
        _, lb = generate_scene(np.random.default_rng(3), domain, "128x64")
        assert lb[-1, 64] == 7 and 23 in lb[:8]


def _stats(domain: str):
    pairs = [generate_scene(np.random.default_rng(i), domain, SIZE) for i in range(8)]
    images = np.stack([p[0] for p in pairs]).astype(np.float64)
    labels = np.stack([p[1] for p in pairs])
    sat = np.mean([cv2.cvtColor(p[0], cv2.COLOR_BGR2HSV)[..., 1].mean() for p in pairs])
    return images, labels, sat


def test_domains_differ_clearly_in_colour_statistics():
    src, src_lb, src_sat = _stats("source")
    tgt, tgt_lb, tgt_sat = _stats("target")
    assert src.mean() - tgt.mean() > 30  # darker target
    assert src_sat - tgt_sat > 10  # duller target
    for label_id in (7, 8, 23):  # road, sidewalk, sky look different per domain
        gap = np.abs(src[src_lb == label_id].mean(0) - tgt[tgt_lb == label_id].mean(0)).max()
        assert gap > 25, (label_id, gap)


def test_written_layouts_load_as_datasets(tmp_path):
    write_gta5_layout(tmp_path / "gta5", 3, SIZE, seed=1)
    write_cityscapes_layout(tmp_path / "cs", 2, 1, SIZE, seed=1)
    source = build_dataset(DataConfig(kind="gta5", root=str(tmp_path / "gta5")), NORM, train=False)
    assert len(source) == 3 and source[2]["name"] == "00003.png"
    assert int((source[0]["label"] != 255).sum()) > 0.9 * 64 * 32
    val_cfg = DataConfig(kind="cityscapes", root=str(tmp_path / "cs"), split="val")
    val = build_dataset(val_cfg, NORM, train=False)
    assert len(val) == 1 and val[0]["name"].startswith("synthcity/")
    again = write_gta5_layout(tmp_path / "again", 3, SIZE, seed=1)
    a, b = (cv2.imread(str(p / "images" / "00002.png")) for p in (tmp_path / "gta5", again))
    assert np.array_equal(a, b)


def test_target_video_plays_and_moves(tmp_path):
    clip = write_target_video(tmp_path / "t.mp4", n_frames=12, size=SIZE, fps=10, seed=0)
    cap = cv2.VideoCapture(str(clip))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    frames = [cap.read()[1] for _ in range(12)]
    cap.release()
    assert all(f is not None and f.shape == (32, 64, 3) for f in frames)
    diffs = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames[1:], strict=False)]
    assert 0 < max(diffs) < 40  # moving, but smoothly
    ds = build_dataset(DataConfig(kind="video", root=str(clip), video_stride=4), NORM, train=True)
    assert len(ds) == 3


def test_synthetic_dataset_refuses_foreign_folders(tmp_path):
    out = tmp_path / "out"
    summary = write_synthetic_dataset(out, source=1, target_train=1, target_val=1, size=SIZE, video=False)
    assert summary.video is None and (out / "synth.json").is_file()
    with pytest.raises(InputError, match="not empty"):
        write_synthetic_dataset(out, source=1, target_train=1, target_val=0, size=SIZE, video=False)
    write_synthetic_dataset(out, source=2, target_train=1, target_val=0, size=SIZE, video=False,
                            overwrite=True)
    assert len(list((out / "gta5" / "images").iterdir())) == 2
    assert not (out / "cityscapes" / "leftImg8bit" / "val").exists()  # the earlier output was replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep")
    with pytest.raises(InputError, match="did not write"):
        write_synthetic_dataset(mine, source=1, target_train=1, target_val=0, size=SIZE, overwrite=True)
    assert (mine / "precious.txt").read_text() == "keep"
    with pytest.raises(InputError, match="unknown synthetic domain"):
        generate_scene(np.random.default_rng(0), "night", SIZE)

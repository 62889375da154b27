"""Bag targets for adaptation: frames of one image topic sampled across the bag as videos are (every
30th, at least 100 per file), exactly the pixels the bag holds, the topic asked for, and `mslseg adapt`
with `--target-kind bag --topic` (2 iterations, slow)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from mslseg.data.bag_frames import BagFrames, find_bags
from mslseg.data.video_frames import frame_positions
from mslseg.runtime.errors import ConfigError, DataError
from tests.runtime import bags

FRONT, REAR = "/front/image_raw", "/rear/image_raw"


@pytest.fixture(scope="module")
def long_bag(tmp_path_factory):
    """250 frames on /front (default rule: every 2nd, so >= 100 are kept), 3 on /rear, rosbag2 sqlite."""
    frames = bags.frames(250, 12, 16, seed=3)
    path = bags.write_rosbag2_sqlite(tmp_path_factory.mktemp("b") / "long", {FRONT: frames, REAR: frames[:3]})
    return path, frames


def test_default_sampling_is_the_video_rule_and_pixels_are_the_bags(long_bag):
    path, frames = long_bag
    data = BagFrames([path], FRONT)
    wanted = frame_positions(250, None, None)
    assert len(data) == len(wanted) == 125 and data.describe() == f"125 frames of {FRONT} (of 250 in 1 bag)"
    for i in (0, 7, 124):
        image, label, name = data.load(i)
        assert label is None and np.array_equal(image, frames[wanted[i]])
        assert name == f"long{FRONT}#{wanted[i]:06d}_{bags.default_stamps(250)[wanted[i]]}"
    again = pickle.loads(pickle.dumps(data))  # DataLoader workers
    assert np.array_equal(again.load(3)[0], data.load(3)[0])


def test_n_frames_spread_stride_limit_and_two_bags_in_a_folder(tmp_path, long_bag):
    path, frames = long_bag
    spread = BagFrames([path], FRONT, frames=5)
    assert [int(spread.index[i][0].split("#")[1][:6]) for i in range(5)] == frame_positions(250, None, 5)
    assert len(BagFrames([path], FRONT, stride=100)) == 3
    folder = tmp_path / "two"
    folder.mkdir()
    bags.write_mcap(folder / "a.mcap", {FRONT: frames[:4]})
    bags.write_rosbag1(folder / "b.bag", {FRONT: frames[4:10]})
    assert [p.name for p in find_bags(str(folder))] == ["a.mcap", "b.bag"]
    both = BagFrames(find_bags(str(folder / "*")), FRONT, limit=7)
    assert len(both) == 7 and both.index[-1][0].startswith("b.bag")
    assert np.array_equal(both.load(5)[0], frames[5])


def test_a_missing_topic_names_the_image_topics(long_bag, tmp_path):
    path, _ = long_bag
    with pytest.raises(ConfigError, match=rf"target.topic.*{FRONT}, {REAR}"):
        BagFrames([path], None)
    with pytest.raises(DataError, match="no images, videos or bags"):
        find_bags(str(tmp_path))


def test_build_dataset_and_the_train_cli_know_bag_targets(long_bag):
    from mslseg.cli.train import target_kind_for
    from mslseg.data.build import build_dataset
    from mslseg.data.config import DataConfig
    from mslseg.runtime.metadata import Normalization

    path, _ = long_bag
    ds = build_dataset(DataConfig(kind="bag", root=str(path), topic=REAR, labelled=False, size="16x12"),
                       Normalization(), train=True)
    assert len(ds) == 3
    assert target_kind_for(path) == "bag" and target_kind_for(Path("x/run.mcap")) == "bag"


@pytest.mark.slow
def test_adapt_on_a_bag_target_for_two_iterations(synth_data, tmp_path):
    from typer.testing import CliRunner

    from mslseg.cli.app import app

    bag = bags.write_mcap(tmp_path / "site.mcap", {FRONT: bags.frames(8, 32, 64, seed=4),
                                                   REAR: bags.frames(2, 32, 64, seed=5)})
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [
        "adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target", str(bag),
        "--target-kind", "bag", "--topic", FRONT, "--method", "msl", "--size", "64x32", "--batch", "2",
        "--iterations", "2", "--out", str(out), "--device", "cpu", "--set", "target_val=null",
        "--set", "train.workers=0", "--set", "train.checkpoint_every=2"])
    assert r.exit_code == 0, r.output
    assert (out / "last.pt").is_file()
    config = (out / "config.yaml").read_text()
    assert "kind: bag" in config and f"topic: {FRONT}" in config

"""Frame sources on real files: videos written with OpenCV, image folders, globs, bad inputs."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from mslseg.runtime.errors import DataError, InputError
from mslseg.runtime.io.sources import FrameRange, open_sources, parse_position
from tests.runtime import models


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return models.write_video(tmp_path_factory.mktemp("v") / "clip.mp4", n=20, fps=10)


def _indices(source):
    return [f.index for f in source]


def test_video_frames_fps_and_size(video):
    (src,) = open_sources(str(video))
    assert (src.kind, src.fps, src.size, src.expected) == ("video", 10.0, (64, 96), 20)
    frames = list(src)
    assert [f.index for f in frames] == list(range(20))
    assert frames[5].time_s == pytest.approx(0.5) and frames[0].image.shape == (64, 96, 3)
    assert src.problems == []


def test_stride_and_ranges(video):
    (src,) = open_sources(str(video), FrameRange(start="3", end="11", stride=3))
    assert src.expected == 3 and _indices(src) == [3, 6, 9]
    (src,) = open_sources(str(video), FrameRange(start="0.5s", end="0:01")) 
    assert _indices(src) == list(range(5, 10))
    (src,) = open_sources(str(video), FrameRange(stride=7))
    assert _indices(src) == [0, 7, 14]


@pytest.mark.parametrize("text, expected", [("12", ("frame", 12)), ("2.5s", ("time", 2.5)),
                                            ("1:30", ("time", 90)), ("0:01:02.5", ("time", 62.5))])
def test_parse_position(text, expected):
    assert parse_position(text) == expected


def test_bad_ranges(video):
    with pytest.raises(InputError, match="cannot read position"):
        FrameRange(start="soon")
    with pytest.raises(InputError, match="end must be after start"):
        open_sources(str(video), FrameRange(start="10", end="5"))
    with pytest.raises(InputError, match="stride"):
        FrameRange(stride=0)


def test_truncated_video_reports_where_it_stopped(tmp_path):
    full = models.write_video(tmp_path / "full.mkv", n=20, fourcc="mp4v")
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    (src,) = open_sources(str(cut))
    n = len(list(src))
    assert 0 < n < 20
    assert src.problems == [f"{cut}: decoding stopped at frame {n} of 20 (truncated or corrupt); "
                            f"the {n} frames before were processed"]


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_sources(str(tmp_path / "nope.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="cannot decode"):
        open_sources(str(junk))
    with pytest.raises(DataError, match="no files match"):
        open_sources(str(tmp_path / "*.png"))


def test_image_folder_skips_unreadable_images(tmp_path):
    for i, f in enumerate(models.frames(3, (40, 50))):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), f)
    (tmp_path / "img1b.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    (src,) = open_sources(str(tmp_path))
    frames = list(src)
    assert [f.name for f in frames] == ["img0.png", "img1.png", "img2.png"]
    assert src.kind == "images" and src.expected == 4 and frames[0].time_s is None
    assert len(src.problems) == 1 and "img1b.jpg: not a readable image, skipped" in src.problems[0]


def test_glob_mixes_videos_and_images(tmp_path, video):
    cv2.imwrite(str(tmp_path / "a.png"), models.frames(1)[0])
    models.write_video(tmp_path / "b.mp4", n=4)
    sources = open_sources(str(tmp_path / "*"))
    assert [s.kind for s in sources] == ["video", "images"]


def test_unopenable_camera_and_stream():
    with pytest.raises(DataError, match="camera 7 cannot be opened"):
        open_sources("7")
    with pytest.raises(DataError, match="cannot open the stream"):
        open_sources("rtsp://127.0.0.1:9/none")


def _png(path, n=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), n, np.uint8))


def _hinted_glob(folder):
    """The glob the error suggests for `folder` and the count it claims."""
    with pytest.raises(DataError, match="its sub-folders do: quote a glob") as info:
        open_sources(str(folder))
    match = re.search(r'e\.g\. "(.+)" \(matches (\d+) images\)', str(info.value))
    assert match, str(info.value)
    return match[1], int(match[2])


def test_a_folder_of_folders_says_which_glob_matches(tmp_path):
    """Images at several depths (data/a/x.png, data/b/c/d/y.jpg): the hint is a glob that finds them."""
    for rel in ("a/1.png", "a/2.png", "b/c/d/3.png", "b/c/4.png", "b/5.jpg", ".cache/6.png"):
        _png(tmp_path / "data" / rel)
    pattern, count = _hinted_glob(tmp_path / "data")
    assert (pattern, count) == (str(tmp_path / "data" / "**" / "*.png"), 4)  # the most frequent suffix
    (source,) = open_sources(pattern)
    assert source.expected == count


def test_a_cityscapes_root_hints_its_camera_images_not_its_labels(tmp_path):
    """leftImg8bit/<split>/<city>/*.png beside gtFine/...: the hint leaves the label maps out."""
    root = tmp_path / "cityscapes"
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("lindau",))):
        for city in cities:
            for i in range(3):
                _png(root / "leftImg8bit" / split / city / f"{city}_{i}_leftImg8bit.png")
                for suffix in ("labelIds", "color", "instanceIds"):
                    _png(root / "gtFine" / split / city / f"{city}_{i}_gtFine_{suffix}.png")
    pattern, count = _hinted_glob(root)
    assert (pattern, count) == (str(root / "leftImg8bit" / "**" / "*.png"), 9)
    (source,) = open_sources(pattern)
    assert all("leftImg8bit" in p.name for p in source.paths)
    assert _hinted_glob(root / "leftImg8bit" / "train") == (str(root / "leftImg8bit" / "train" / "**" / "*.png"), 6)


def test_a_folder_without_media_lists_the_suffixes(tmp_path):
    (tmp_path / "notes" / "deep").mkdir(parents=True)
    (tmp_path / "notes" / "deep" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"holds no images, videos or bags \(images: \.png .*; videos: \.mp4 .*; bags: \.mcap "):
        open_sources(str(tmp_path / "notes"))


def test_a_double_star_glob_reaches_every_depth(tmp_path):
    """`archive/**/*.mp4`: footage archives nest by robot and day; ** finds the videos at any depth."""
    for sub in ("a", "a/2026-11-30", "b/x/y"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        models.write_video(tmp_path / sub / "clip.mp4", n=2)
    names = [s.name for s in open_sources(str(tmp_path / "**" / "*.mp4"))]
    assert names == [str(tmp_path / p / "clip.mp4") for p in ("a/2026-11-30", "a", "b/x/y")]  # sorted paths

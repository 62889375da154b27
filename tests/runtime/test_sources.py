"""Frame sources on real files: videos written with OpenCV, image folders, globs, bad inputs."""

from __future__ import annotations

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


def test_a_folder_of_folders_says_which_glob_to_quote(tmp_path):
    """A Cityscapes-like split (val/<city>/*.png): subfolders are not searched, and the error says how."""
    (tmp_path / "val" / "city").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "val" / "city" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r'its subfolders do: quote a glob, e\.g\. ".*val/\*/\*\.png"'):
        open_sources(str(tmp_path / "val"))
    assert len(open_sources(str(tmp_path / "val" / "*" / "*.png"))) == 1


def test_a_double_star_glob_reaches_every_depth(tmp_path):
    """`archive/**/*.mp4`: footage archives nest by robot and day; ** finds the videos at any depth."""
    for sub in ("a", "a/2026-11-30", "b/x/y"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        models.write_video(tmp_path / sub / "clip.mp4", n=2)
    names = [s.name for s in open_sources(str(tmp_path / "**" / "*.mp4"))]
    assert names == [str(tmp_path / p / "clip.mp4") for p in ("a/2026-11-30", "a", "b/x/y")]  # sorted paths

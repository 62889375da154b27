"""Robot bags read as frame sources: real bags written by rosbags and mcap, read back by runtime/io/bags.py."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from mslseg.runtime.errors import DataError, InputError, MissingDependencyError
from mslseg.runtime.io.bags import BagSource, ImageTopic, decode_image, is_bag, list_image_topics
from mslseg.runtime.io.sources import Frame, FrameRange
from tests.runtime import bags

TOPIC = "/front/image_raw"


def _gray_bgr(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def _write(kind: str, tmp_path, topics, encoding, **kwargs):
    if kind == "mcap2":
        return bags.write_mcap(tmp_path / "run.mcap", topics, encoding, ros=2, **kwargs)
    if kind == "mcap1":
        return bags.write_mcap(tmp_path / "run.mcap", topics, encoding, ros=1, **kwargs)
    if kind == "rosbag2_sqlite":
        return bags.write_rosbag2_sqlite(tmp_path / "run", topics, encoding, **kwargs)
    if kind == "rosbag2_mcap":
        return bags.write_rosbag2(tmp_path / "run", topics, encoding, storage="mcap", **kwargs)
    return bags.write_rosbag1(tmp_path / "run.bag", topics, encoding, **kwargs)


# every container with a raw, a 16-bit, a lossless and a lossy encoding spread over them
CASES = [("mcap2", "bgr8"), ("mcap2", "jpeg"), ("mcap1", "rgb8"), ("mcap1", "png"), ("rosbag2_sqlite", "mono8"),
         ("rosbag2_sqlite", "mono16"), ("rosbag2_mcap", "png"), ("rosbag1", "bgr8"), ("rosbag1", "jpeg")]


@pytest.mark.parametrize("kind,encoding", CASES)
def test_frames_stamps_and_pixels_survive_each_container(tmp_path, kind, encoding):
    frames = bags.frames(5)
    stamps = bags.default_stamps(5)
    path = _write(kind, tmp_path, {TOPIC: frames}, encoding, frame_id="front_cam")
    assert is_bag(path)
    source = BagSource(path, TOPIC)
    got = list(source)
    assert (source.kind, source.frame_count, source.expected, source.size) == ("bag", 5, 5, (12, 16))
    assert source.fps == pytest.approx(30.0, rel=1e-3) and source.start_ns == stamps[0]
    assert [f.index for f in got] == list(range(5))
    assert [f.stamp_ns for f in got] == stamps  # the header stamps, not the log (receive) times
    assert {f.frame_id for f in got} == {"front_cam"}
    assert [f.time_s for f in got] == pytest.approx([(s - stamps[0]) / 1e9 for s in stamps])
    for frame, want in zip(got, frames, strict=True):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (12, 16, 3) and frame.image.flags.writeable
        if encoding in ("mono8", "mono16"):  # 16 bit: gray * 257 with a full-scale pixel scales back exactly
            want = _gray_bgr(want)
        if encoding == "jpeg":  # lossy: the frame as its jpeg bytes decode, to the bit
            want = cv2.imdecode(cv2.imencode(".jpg", want)[1], cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(frame.image, want)
    assert source.problems == []


@pytest.mark.parametrize("encoding,pad,bigendian", [("bgra8", 0, False), ("rgba8", 3, False), ("bgr8", 5, False),
                                                    ("mono16", 0, True), ("mono16", 4, False)])
def test_raw_layouts_padding_and_byte_order(tmp_path, encoding, pad, bigendian):
    frames = bags.frames(2)
    path = bags.write_mcap(tmp_path / "a.mcap", {TOPIC: frames}, encoding, pad=pad, bigendian=bigendian)
    got = [f.image for f in BagSource(path, TOPIC)]
    want = [_gray_bgr(f) if encoding == "mono16" else f for f in frames]
    np.testing.assert_array_equal(np.stack(got), np.stack(want))


def test_bayer_rggb_keeps_colours_where_they_are():
    frame = np.empty((8, 10, 3), np.uint8)
    frame[:] = (30, 100, 200)  # B, G, R: a swapped pattern would turn this blue or green
    mosaic = bags.mosaic_rggb(frame)
    image = decode_image(mosaic.tobytes(), "bayer_rggb8", height=8, width=10, step=10)
    np.testing.assert_array_equal(image[2:-2, 2:-2], frame[2:-2, 2:-2])


def test_sixteen_bit_scales_by_the_frame_maximum():
    values = np.array([[0, 1000], [2000, 4000]], np.uint16)  # a 12-bit sensor's range
    image = decode_image(values.astype("<u2").tobytes(), "16UC1", height=2, width=2, step=4)
    assert image[..., 0].tolist() == [[0, 64], [128, 255]]


def test_two_cameras_in_one_bag(tmp_path):
    front, rear = bags.frames(4, seed=1), bags.frames(3, h=8, w=10, seed=2)
    stamps = {TOPIC: bags.default_stamps(4), "/rear/image_raw/compressed": bags.default_stamps(3, period_ns=50_000_000)}
    path = bags.write_mcap(tmp_path / "two.mcap", {TOPIC: front, "/rear/image_raw/compressed": rear}, "png",
                           ros=1, stamps_ns=stamps, text_topics={"/chatter": 2})
    topics = list_image_topics(path)
    assert [t.name for t in topics] == ["/front/image_raw", "/rear/image_raw/compressed"]
    assert topics[1] == ImageTopic("/rear/image_raw/compressed", "sensor_msgs/msg/CompressedImage", 3, "png", 10, 8)
    assert topics[1].line() == "/rear/image_raw/compressed  sensor_msgs/CompressedImage  png 10x8  3 msgs"
    for name, want in ((TOPIC, front), ("/rear/image_raw/compressed", rear)):
        source = BagSource(path, name)
        got = list(source)
        np.testing.assert_array_equal(np.stack([f.image for f in got]), np.stack(want))
        assert [f.stamp_ns for f in got] == stamps[name]
    assert BagSource(path, TOPIC).stem == "two_front_image_raw"
    assert BagSource(path, "/rear/image_raw/compressed").fps == pytest.approx(20.0)


def test_range_and_stride_follow_the_stamps_not_an_average_rate(tmp_path):
    # a camera that dropped frames: 10 fps by the median interval, a gap between 0.2 s and 0.5 s
    offsets = [0.0, 0.1, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9]
    stamps = [bags.T0_NS + round(t * 1e9) for t in offsets]
    path = bags.write_rosbag2_sqlite(tmp_path / "gap", {TOPIC: bags.frames(8)}, "bgr8", stamps_ns=stamps)
    source = BagSource(path, TOPIC, FrameRange("0.3s", "0.65s"))
    assert source.fps == pytest.approx(10.0)
    assert [f.index for f in source] == [3, 4] and source.expected == 2  # 10 fps would have taken 3..6
    source = BagSource(path, TOPIC, FrameRange("0.15s", None, stride=2))
    assert [f.index for f in source] == [2, 4, 6] and source.expected == 3
    assert [f.time_s for f in BagSource(path, TOPIC, FrameRange("5", "7"))] == pytest.approx([0.7, 0.8])
    with pytest.raises(InputError, match="starts past its end"):
        BagSource(path, TOPIC, FrameRange("2s"))
    with pytest.raises(InputError, match="is empty"):
        BagSource(path, TOPIC, FrameRange("0.3s", "0.35s"))  # no frame stamped inside


def test_truncated_mcap_yields_the_frames_before_the_damage(tmp_path):
    frames = bags.frames(30, h=24, w=32)
    for ros in (1, 2):
        path = bags.write_mcap(tmp_path / f"cut{ros}.mcap", {TOPIC: frames}, "bgr8", ros=ros, chunk_size=8000)
        bags.truncate(path, path.stat().st_size // 2)
        source = BagSource(path, TOPIC)
        got = list(source)
        assert 0 < len(got) == source.frame_count < 30
        np.testing.assert_array_equal(np.stack([f.image for f in got]), np.stack(frames[: len(got)]))
        assert len(source.problems) == 1 and source.problems[0].startswith(
            f"cut{ros}.mcap: reading {TOPIC} stopped after {len(got)} messages (truncated or damaged")


def test_truncated_ros1_bag_says_how_to_recover(tmp_path):
    path = bags.truncate(bags.write_rosbag1(tmp_path / "cut.bag", {TOPIC: bags.frames(3)}), 100)
    with pytest.raises(DataError, match=r"cut.bag is not a readable ROS 1 bag .*rosbag reindex"):
        list_image_topics(path)


def test_wrong_topics_name_the_image_topics(tmp_path):
    path = bags.write_mcap(tmp_path / "run_0412.mcap", {TOPIC: bags.frames(2), "/b": bags.frames(1)}, "bgr8",
                           text_topics={"/chatter": 2})
    with pytest.raises(InputError) as missing:
        BagSource(path, "/x")
    assert str(missing.value) == ("run_0412.mcap has no topic /x; its image topics: /b (sensor_msgs/Image, 1), "
                                  "/front/image_raw (sensor_msgs/Image, 2)")
    with pytest.raises(InputError, match=r"topic /chatter is std_msgs/String, not a camera image; its image topics: /b"):
        BagSource(path, "/chatter")
    only_text = bags.write_rosbag1(tmp_path / "imu.bag", {}, text_topics={"/chatter": 2})
    assert list_image_topics(only_text) == []
    with pytest.raises(InputError, match=r"imu.bag has no topic /x; it has no image topics .* only: /chatter"):
        BagSource(only_text, "/x")


def test_unreadable_files_and_encodings(tmp_path):
    garbage = tmp_path / "x.mcap"
    garbage.write_bytes(b"not a bag at all" * 20)
    with pytest.raises(DataError, match=r"^x.mcap is not a readable MCAP file \(.*magic"):
        BagSource(garbage, TOPIC)
    (tmp_path / "y.bag").write_bytes(b"#ROSBAG V2.0\n" + b"\0" * 50)
    with pytest.raises(DataError, match="y.bag is not a readable ROS 1 bag"):
        list_image_topics(tmp_path / "y.bag")
    with pytest.raises(DataError, match="does not exist"):
        list_image_topics(tmp_path / "missing.mcap")
    with pytest.raises(InputError, match="is not a bag"):
        list_image_topics(_touch(tmp_path / "clip.txt"))
    depth = bags.write_mcap(tmp_path / "depth.mcap", {"/depth": bags.frames(2)}, "32FC1")
    with pytest.raises(DataError) as unsupported:
        BagSource(depth, "/depth")
    text = str(unsupported.value)
    assert text.startswith("topic /depth has encoding 32FC1, which mslseg cannot show as a camera image; "
                           "supported: bgr8, 8UC3, rgb8") and "bayer_rggb8" in text and "jpeg (compressed)" in text
    with pytest.raises(DataError, match="too few for a 16x12 bgr8 image"):
        decode_image(b"\0" * 100, "bgr8", height=12, width=16, step=48)
    with pytest.raises(DataError, match="not a decodable jpeg"):
        decode_image(b"\xff\xd8 broken", "jpeg", compressed=True, topic="/c")


def _touch(path):
    path.write_bytes(b"x")
    return path


def test_is_bag_by_name_or_rosbag2_folder(tmp_path):
    folder = bags.write_rosbag2_sqlite(tmp_path / "b", {TOPIC: bags.frames(1)})
    assert is_bag(folder) and is_bag(next(folder.glob("*.db3"))) and is_bag("a/run.MCAP") and is_bag("r.bag")
    assert not is_bag(tmp_path) and not is_bag("clip.mp4")


def test_frames_of_files_carry_no_stamp():
    frame = Frame(np.zeros((2, 2, 3), np.uint8), 0, None)
    assert frame.stamp_ns is None and frame.frame_id == ""


def test_bag_libraries_load_only_when_a_bag_is_read(monkeypatch, tmp_path):
    code = "import sys, mslseg.runtime.io.bags; print(sorted(m for m in ('rosbags', 'mcap') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    path = bags.write_mcap(tmp_path / "a.mcap", {TOPIC: bags.frames(1)})
    monkeypatch.setitem(sys.modules, "mcap.reader", None)  # as if the [bags] extra were not installed
    with pytest.raises(MissingDependencyError, match=r"mslseg\[bags\]"):
        BagSource(path, TOPIC)


def test_damage_inside_an_indexed_mcap_is_reported_with_the_count(tmp_path):
    frames = bags.frames(30, h=24, w=32)
    path = bags.write_mcap(tmp_path / "hole.mcap", {TOPIC: frames}, "bgr8", chunk_size=8000)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = b"\xa5" * 2000  # a bad sector: the summary at the end still counts 30
    path.write_bytes(bytes(data))
    source = BagSource(path, TOPIC)
    got = list(source)
    assert source.frame_count == 30 and 0 < len(got) < 30
    np.testing.assert_array_equal(np.stack([f.image for f in got]), np.stack(frames[: len(got)]))
    assert f"stopped after {len(got)} of 30 messages" in source.problems[0]


def test_a_header_left_unstamped_falls_back_to_the_receive_time(tmp_path):
    path = bags.write_rosbag1(tmp_path / "nostamp.bag", {TOPIC: bags.frames(2)}, stamps_ns=[0, 0])
    assert [f.stamp_ns for f in BagSource(path, TOPIC)] == [bags.LOG_DELAY_NS] * 2

"""--bag-out: the MCAP of a run reads back with the mcap reader and the ROS 2 decoder, as Foxglove reads it."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

from mslseg.runtime import Segmenter
from mslseg.runtime.errors import InputError
from mslseg.runtime.infer_job import InferOptions, run_infer
from mslseg.runtime.io.bag_writer import McapOut
from mslseg.runtime.io.bags import BagSource
from mslseg.runtime.io.sources import FrameRange, open_sources
from tests.fullfs import leftovers
from tests.runtime import bags, models

TOPIC = "/front/image_raw"
N = 5


@pytest.fixture(scope="module")
def seg():
    with Segmenter(models.onnx_model("uint8_labels"), device="cpu", batch_size=2, threads=1) as s:
        yield s


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return bags.write_mcap(tmp_path_factory.mktemp("b") / "run.mcap", {TOPIC: models.frames(N, seed=5)})


def read_back(path) -> dict[str, list[tuple[str, int, object]]]:
    """topic -> [(schema name, log time, decoded message)] in log-time order."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            out.setdefault(channel.topic, []).append((schema.name, message.log_time, decoded))
    return out


def stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _source_messages(path):
    """(log time, data bytes, stamp) of each message on TOPIC of the source bag, as recorded."""
    return [(log, bytes(m.data), stamp(m)) for _, log, m in read_back(path)[TOPIC]]


def test_labels_overlay_and_class_map_carry_the_source_stamps(tmp_path, seg, bag):
    (source,) = [BagSource(bag, TOPIC)]
    opts = InferOptions(out=tmp_path / "o", labels="png", areas="none", bag_out=True)
    summary = run_infer([source], seg, opts)
    out = tmp_path / "o" / f"{source.stem}.mcap"
    assert str(out) in summary.sources[0].outputs
    got = read_back(out)
    assert sorted(got) == sorted(TOPIC + s for s in ("/mslseg/labels", "/mslseg/overlay/compressed",
                                                      "/mslseg/classes"))
    stamps = bags.default_stamps(N)
    labels = got[TOPIC + "/mslseg/labels"]
    assert {name for name, _, _ in labels} == {"sensor_msgs/msg/Image"}
    assert [stamp(m) for _, _, m in labels] == stamps == [log for _, log, _ in labels]
    assert {m.header.frame_id for _, _, m in labels} == {"front"}
    pngs = sorted((tmp_path / "o" / "labels" / source.stem).glob("*.png"))
    assert len(pngs) == N
    for (_, _, m), png in zip(labels, pngs, strict=True):
        assert (m.encoding, m.height, m.width, m.step) == ("mono8", 48, 64, 64)
        pixels = np.frombuffer(bytes(m.data), np.uint8).reshape(48, 64)
        assert np.array_equal(pixels, cv2.imread(str(png), cv2.IMREAD_UNCHANGED))
    assert len(np.unique(pixels)) > 1  # a real label map, not a blank one
    overlays = got[TOPIC + "/mslseg/overlay/compressed"]
    assert [stamp(m) for _, _, m in overlays] == stamps
    assert {(name, m.format) for name, _, m in overlays} == {("sensor_msgs/msg/CompressedImage", "jpeg")}
    image = cv2.imdecode(np.frombuffer(bytes(overlays[0][2].data), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 64, 3)  # the frame's size: the legend strip is left out
    ((name, log, classes),) = got[TOPIC + "/mslseg/classes"]
    assert name == "std_msgs/msg/String" and log == stamps[0]
    classes = json.loads(classes.data)
    assert classes["names"] == list(seg.meta.class_names)
    assert classes["palette"] == [list(c) for c in seg.meta.palette]
    assert not leftovers(tmp_path / "o")


@pytest.mark.parametrize("ros", [2, 1])
def test_the_source_topic_is_copied_as_recorded_over_the_segmented_span(tmp_path, seg, ros):
    bag = bags.write_mcap(tmp_path / f"ros{ros}.mcap", {TOPIC: models.frames(N, seed=6)}, encoding="rgb8", ros=ros,
                          chunk_size=4096 if ros == 2 else None, text_topics={"/chatter": 3})
    source = BagSource(bag, TOPIC, FrameRange(start="1", stride=2))  # frames 1 and 3
    run_infer([source], seg, InferOptions(out=tmp_path / "o", labels="none", areas="none", overlay=False,
                                          bag_out=True, bag_out_source=True))
    got = read_back(tmp_path / "o" / f"{source.stem}.mcap")
    assert sorted(got) == sorted([TOPIC, TOPIC + "/mslseg/labels", TOPIC + "/mslseg/classes"])  # no overlay
    stamps = bags.default_stamps(N)
    assert [stamp(m) for _, _, m in got[TOPIC + "/mslseg/labels"]] == [stamps[1], stamps[3]]
    copied = got[TOPIC]
    assert {name for name, _, _ in copied} == {"sensor_msgs/msg/Image"}
    assert {m.encoding for _, _, m in copied} == {"rgb8"}
    # messages 1..3 (the one the stride skipped too), with their own log times, stamps and bytes
    if ros == 2:
        assert [(log, bytes(m.data), stamp(m)) for _, log, m in copied] == _source_messages(bag)[1:4]
    else:
        assert [(log, stamp(m)) for _, log, m in copied] == [(s + bags.LOG_DELAY_NS, s) for s in stamps[1:4]]
        assert {m.header.frame_id for _, _, m in copied} == {"front"}


def test_a_video_is_stamped_with_its_frame_times(tmp_path, seg):
    video = models.write_video(tmp_path / "0412 drive.mp4", n=4, size=(48, 64), fps=10)
    run_infer(open_sources(str(video)), seg, InferOptions(out=tmp_path / "o", labels="none", areas="none",
                                                          bag_out=True, bag_out_source=True))
    got = read_back(tmp_path / "o" / "0412_drive.mcap")
    base = "/_0412_drive/image"  # a ROS name: no spaces, no leading digit
    labels = got[base + "/mslseg/labels"]
    assert [stamp(m) for _, _, m in labels] == [0, 100_000_000, 200_000_000, 300_000_000]
    assert {m.header.frame_id for _, _, m in labels} == {"camera"}
    copied = got[base + "/compressed"]
    assert [stamp(m) for _, _, m in copied] == [stamp(m) for _, _, m in labels]
    assert {m.format for _, _, m in copied} == {"jpeg"}


def test_labels_past_255_classes_are_mono16(tmp_path):
    (source,) = open_sources(str(models.write_video(tmp_path / "v.mp4", n=1, size=(8, 16))))
    meta = models.meta()
    writer = McapOut(tmp_path / "v.mcap", source, meta)
    frame = next(iter(source))
    labels = np.arange(8 * 16, dtype=np.uint16).reshape(8, 16) * 300
    writer.write(frame, labels, None)
    writer.close()
    ((_, _, m),) = read_back(tmp_path / "v.mcap")["/v/image/mslseg/labels"]
    assert (m.encoding, m.step, m.is_bigendian) == ("mono16", 32, 0)
    assert np.array_equal(np.frombuffer(bytes(m.data), "<u2").reshape(8, 16), labels)


def test_image_sources_are_refused_before_anything_is_written(tmp_path, seg):
    cv2.imwrite(str(tmp_path / "a.png"), models.frames(1)[0])
    with pytest.raises(InputError, match="--bag-out .* have none"):
        run_infer(open_sources(str(tmp_path / "a.png")), seg, InferOptions(out=tmp_path / "o", bag_out=True))
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="add --bag-out"):
        InferOptions(out=tmp_path / "o", bag_out_source=True)


def test_a_failed_run_leaves_no_mcap_under_any_name(tmp_path, seg, bag):
    def on_frame(report):
        if report.frames == 3:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        run_infer([BagSource(bag, TOPIC)], seg, InferOptions(out=tmp_path / "o", bag_out=True, bag_out_source=True),
                  on_frame=on_frame)
    assert [p for p in (tmp_path / "o").rglob("*") if p.is_file()] == []


def test_resume_replaces_an_unfinished_mcap(tmp_path, seg):
    n = 30  # enough that a stop after 2 frames ends before the end, batches in flight included
    bag = bags.write_mcap(tmp_path / "long.mcap", {TOPIC: models.frames(n, size=(24, 32), seed=7)})
    out, stop = tmp_path / "o", threading.Event()
    source = BagSource(bag, TOPIC)
    final = out / f"{source.stem}.mcap"
    out.mkdir()
    (out / f".{final.name}.partial").write_bytes(b"a killed run's half-written file")

    def on_frame(report):
        if report.frames == 2:
            stop.set()

    # a killed run's file, then a stopped one's closed prefix: both replaced by the runs after them
    first = run_infer([source], seg, InferOptions(out=out, bag_out=True, resume=True), on_frame=on_frame, stop=stop)
    assert first.interrupted and not first.sources[0].complete
    kept = read_back(final)[TOPIC + "/mslseg/labels"]  # a closed, readable prefix
    assert 2 <= len(kept) < n
    second = run_infer([BagSource(bag, TOPIC)], seg, InferOptions(out=out, bag_out=True, resume=True))
    assert second.sources[0].complete and not second.interrupted
    assert [stamp(m) for _, _, m in read_back(final)[TOPIC + "/mslseg/labels"]] == bags.default_stamps(n)
    assert not leftovers(out)

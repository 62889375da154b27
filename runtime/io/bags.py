"""Robot bags as frame sources: the camera topics of MCAP files, rosbag2 folders and ROS 1 bags.

`list_image_topics(path)` says which `sensor_msgs/Image` and `sensor_msgs/CompressedImage` topics a
bag holds (type, count, encoding, size); `BagSource(path, topic, frames)` is an iterable of
`sources.Frame`s like `VideoSource`, each frame carrying its message's header stamp and frame_id.
Readers (`bag_readers.py` says more): rosbags' AnyReader for ROS 1 .bag files, rosbag2 folders and
lone .db3 files; `mcap` with its ROS 1 and ROS 2 decoders for a bare .mcap, because AnyReader refuses
ROS 1 MCAP files and `mcap` still streams a file whose summary was cut off. Pixels: `bag_decode.py`.

Bag time: a frame's `time_s` is seconds from the topic's first stamp (`start_ns`), and --start/--end
given as times select by the frames' actual stamps (a camera that dropped frames or changed rate
is cut where its stamps say, not where an average frame rate guesses). A stamp is the message's
header stamp, or its log (receive) time when a publisher left the header stamp at zero.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from mslseg.runtime.errors import DataError, InputError
from mslseg.runtime.io.bag_decode import check_encoding, compressed_format, decode_image
from mslseg.runtime.io.bag_readers import BagDamaged, TopicEntry, open_bag
from mslseg.runtime.io.media import BAG_SUFFIXES, is_bag  # the owner of what a bag is called; re-exported
from mslseg.runtime.io.sources import Frame, FrameRange, parse_position, safe_stem

__all__ = ["IMAGE_TYPES", "BAG_SUFFIXES", "ImageTopic", "BagSource", "is_bag", "list_image_topics", "decode_image"]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")  # ROS 1 names map to these
FPS_PROBE = 64  # messages whose stamps give the frame rate (the median interval): enough, and cheap


@dataclass(frozen=True)
class ImageTopic:
    name: str  # "/front/image_raw"
    msgtype: str  # ROS 2 style: sensor_msgs/msg/Image | sensor_msgs/msg/CompressedImage
    count: int  # messages
    encoding: str | None  # the first message's encoding (bgr8, mono16, ...) or compressed format (jpeg, png)
    width: int | None  # from the first message (decoded, for a compressed one)
    height: int | None

    def line(self) -> str:
        """'/front/image_raw  sensor_msgs/Image  bgr8 640x480  1200 msgs'"""
        size = f" {self.width}x{self.height}" if self.width and self.height else ""
        return f"{self.name}  {_short(self.msgtype)}  {self.encoding or '?'}{size}  {self.count} msgs"


@dataclass(frozen=True)
class _Message:
    """The fields of an Image or CompressedImage message, whichever library decoded it."""

    stamp_ns: int
    frame_id: str
    encoding: str  # a CompressedImage's format
    compressed: bool
    height: int
    width: int
    step: int
    is_bigendian: bool
    data: Any

    def image(self, topic: str):
        return decode_image(self.data, self.encoding, height=self.height, width=self.width, step=self.step,
                            is_bigendian=self.is_bigendian, compressed=self.compressed, topic=topic)


def _short(msgtype: str) -> str:
    return msgtype.replace("/msg/", "/")


def _stamp_ns(stamp: Any) -> int:
    if hasattr(stamp, "nanosec"):  # ROS 2, and rosbags' ROS 1 messages
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return int(stamp.secs) * 1_000_000_000 + int(stamp.nsecs)  # mcap-ros1-support's genpy Time


def _message(msg: Any, msgtype: str, log_ns: int) -> _Message:
    stamp = _stamp_ns(msg.header.stamp)
    compressed = msgtype.endswith("CompressedImage")
    return _Message(
        stamp_ns=stamp or log_ns, frame_id=str(msg.header.frame_id),
        encoding=str(msg.format if compressed else msg.encoding), compressed=compressed,
        height=0 if compressed else int(msg.height), width=0 if compressed else int(msg.width),
        step=0 if compressed else int(msg.step), is_bigendian=bool(getattr(msg, "is_bigendian", 0)), data=msg.data)


def _describe(bag, name: str, entry: TopicEntry) -> ImageTopic:
    try:
        log_ns, msg = next(bag.messages(name))
    except (StopIteration, BagDamaged):
        return ImageTopic(name, entry.msgtype, entry.count, None, None, None)
    first = _message(msg, entry.msgtype, log_ns)
    height, width = first.height or None, first.width or None
    if first.compressed:
        try:
            height, width = first.image(name).shape[:2]
        except DataError:
            pass
    encoding = compressed_format(first.encoding) if first.compressed else first.encoding
    return ImageTopic(name, entry.msgtype, entry.count, encoding, width, height)


def list_image_topics(path: str | Path) -> list[ImageTopic]:
    """The bag's camera topics, by name; empty when it has none. DataError for an unreadable bag."""
    bag = open_bag(path)
    try:
        return [_describe(bag, name, entry) for name, entry in sorted(bag.topics.items())
                if entry.msgtype in IMAGE_TYPES]
    finally:
        bag.close()


def _topic_list(topics: dict[str, TopicEntry], image: bool, most: int = 8) -> str:
    chosen = [(n, e) for n, e in sorted(topics.items()) if (e.msgtype in IMAGE_TYPES) == image]
    text = ", ".join(f"{n} ({_short(e.msgtype)}, {e.count})" for n, e in chosen[:most])
    return text + (f" and {len(chosen) - most} more" if len(chosen) > most else "")


def _check_topic(bag, label: str, topic: str) -> TopicEntry:
    images = _topic_list(bag.topics, True)
    others = (f"; it has no image topics ({', '.join(_short(t) for t in IMAGE_TYPES)}), only: "
              f"{_topic_list(bag.topics, False) or 'none'}")
    choose = f"; its image topics: {images}" if images else others
    entry = bag.topics.get(topic)
    if entry is None:
        raise InputError(f"{label} has no topic {topic}{choose}")
    if entry.msgtype not in IMAGE_TYPES:
        raise InputError(f"{label} topic {topic} is {_short(entry.msgtype) or 'of unknown type'}, "
                         f"not a camera image{choose}")
    if not entry.count:
        raise DataError(f"{label} has no messages on {topic}")
    return entry


def bag_stem(path: str | Path, topic: str) -> str:
    """The output stem of a bag's topic, `<bag>_<topic>`: what infer, the cluster and --bag-out name files by."""
    path = Path(path)
    bag_name = path.name if path.is_dir() else path.stem
    # ".bag" is stripped again by safe_stem, so a dot in the bag's own name is kept, not cut at
    return safe_stem(f"{bag_name}_{topic.strip('/').replace('/', '_')}.bag")


class BagSource:
    """One image topic of a bag: frames (BGR uint8) with their stamps, like `sources.VideoSource`.

    The bag is opened to probe (topic, first frame, frame rate, range) and closed again; each pass of
    `__iter__` reopens it, so many sources can wait without holding files open. Damage met while
    reading (a truncated file) ends the frames and is described in `problems`.
    """

    kind = "bag"
    live = False

    def __init__(self, path: str | Path, topic: str, frames: FrameRange | None = None) -> None:
        self.path, self.topic, self.frames = Path(path), topic, frames or FrameRange()
        self.name = f"{self.path}:{topic}"
        self.label = self.path.name  # the bag's file or folder name, in messages
        self.stem = bag_stem(self.path, topic)
        self.problems: list[str] = []
        self._bag = None
        bag = open_bag(self.path)
        try:
            entry = _check_topic(bag, self.label, topic)
            self.msgtype, self.frame_count = entry.msgtype, int(entry.count)
            self._probe(bag)
            self._start, self._end = self._bounds(bag)
        finally:
            bag.close()
        last = min(self._end, self.frame_count) if self._end is not None else self.frame_count
        self.expected: int | None = -(-(last - self._start) // self.frames.stride)

    def _probe(self, bag) -> None:
        """The first frame (size, a decodable encoding), the first stamp and the frame rate."""
        stamps: list[int] = []
        try:
            for log_ns, msg in bag.messages(self.topic):
                message = _message(msg, self.msgtype, log_ns)
                if not stamps:
                    check_encoding(message.encoding, message.compressed, self.topic)
                    self.size: tuple[int, int] = message.image(self.topic).shape[:2]
                stamps.append(message.stamp_ns)
                if len(stamps) >= FPS_PROBE:
                    break
        except BagDamaged as exc:
            if not stamps:
                raise DataError(f"{self.label}: the first message on {self.topic} cannot be read ({exc})") from None
        if not stamps:
            raise DataError(f"{self.label} has no messages on {self.topic}")
        self.start_ns = stamps[0]
        steps = [b - a for a, b in pairwise(stamps)]
        median = statistics.median(steps) if steps else 0
        self.fps: float | None = 1e9 / median if median > 0 else None

    def _bounds(self, bag) -> tuple[int, int | None]:
        """[start, end) message indices of --start/--end: numbers as given, times by the frames' stamps."""
        positions = [parse_position(self.frames.start), parse_position(self.frames.end)]
        targets = [self.start_ns + round(p[1] * 1e9) for p in positions if p is not None and p[0] == "time"]
        first_at = self._first_at(bag, targets) if targets else {}

        def index(pos: tuple[str, float] | None) -> int | None:
            if pos is None:
                return None
            return int(pos[1]) if pos[0] == "frame" else first_at[self.start_ns + round(pos[1] * 1e9)]

        start, end = index(positions[0]) or 0, index(positions[1])
        if end is not None and end <= start:
            raise InputError(f"the range {self.frames.start or 0}..{self.frames.end} of {self.name} is empty; "
                             "end must be after start")
        if start >= self.frame_count:
            span = f" (its stamps span {(self._last_ns - self.start_ns) / 1e9:.3f} s)" if targets else ""
            raise InputError(f"{self.name} has {self.frame_count} messages; the range starts past its end{span}")
        return start, end

    def _first_at(self, bag, targets: list[int]) -> dict[int, int]:
        """target stamp -> index of the first message stamped at or after it (the count when none is)."""
        found: dict[int, int] = {}
        seen, self._last_ns = 0, self.start_ns
        try:
            for log_ns, msg in bag.messages(self.topic):
                self._last_ns = _stamp_ns(msg.header.stamp) or log_ns
                for target in targets:
                    if target not in found and self._last_ns >= target:
                        found[target] = seen
                if len(found) == len(targets):
                    break
                seen += 1
        except BagDamaged:
            pass
        return {t: found.get(t, seen) for t in targets}

    def __iter__(self) -> Iterator[Frame]:
        """Single pass; messages outside the range or stride are not decoded to pixels."""
        self.close()
        bag = self._bag = open_bag(self.path)
        index, done = -1, 0
        try:
            for index, (log_ns, msg) in enumerate(bag.messages(self.topic)):
                if self._end is not None and index >= self._end:
                    return
                if index < self._start or (index - self._start) % self.frames.stride:
                    continue
                message = _message(msg, self.msgtype, log_ns)
                try:
                    image = message.image(self.topic)
                except DataError as exc:
                    self.problems.append(f"{self.label}: message {index} on {self.topic} skipped: {exc}")
                    continue
                done += 1
                yield Frame(image, index, (message.stamp_ns - self.start_ns) / 1e9, "", message.stamp_ns,
                            message.frame_id)
        except BagDamaged as exc:
            stopped = index + 1
            of = f" of {self.frame_count}" if stopped < self.frame_count else ""
            self.problems.append(f"{self.label}: reading {self.topic} stopped after {stopped}{of} messages (truncated "
                                 f"or damaged: {exc}); the {done} frames before were processed")
        finally:
            self.close()

    def close(self) -> None:
        if self._bag is not None:
            self._bag.close()
            self._bag = None

"""--bag-out: a source's segmentation as an MCAP of ROS 2 messages, for Foxglove and the ROS tools.

Per source, `<stem>.mcap` beside the other outputs, ROS 2 CDR messages (profile "ros2") on topics
under the camera's topic (BASE), the names the live node (examples/ros2_segmenter_node.py) publishes:

    BASE/mslseg/labels               sensor_msgs/msg/Image, mono8 (mono16 past 255 classes)
    BASE/mslseg/overlay/compressed   sensor_msgs/msg/CompressedImage, jpeg: the overlay at the frame's
                                     size (no legend strip: it lies over the camera's pixels)
    BASE/mslseg/classes              std_msgs/msg/String, once: JSON {"names": [...], "palette": [[r, g, b]]}
    BASE (--bag-out-source)          the camera itself (see below)

Each message's header is the source frame's: a bag frame's header stamp and frame_id, so Foxglove
lines the labels up with the camera and its TF frame; the MCAP log time is that stamp too.
Sources that are not bags: BASE is /<stem>/image, frame_id "camera", and the stamp is the frame's
time in the video (from 0), or the wall clock when it was segmented for a camera or stream; still
images have no time and are refused (`check_bag_out`).

The camera copy (--bag-out-source): for a bag, the topic's own messages from the first segmented
frame to the last (the ones a --stride skipped included), re-read from the bag and written with their
original header, fields, bytes and log times as ROS 2 messages of the same type (a ROS 1 bag's are
converted: only the header's seq is lost). Elsewhere, each segmented frame as a jpeg CompressedImage
on BASE/compressed.

Crash-safe like every writer here: the file grows under its fixed partial name (`atomic.partial_name`,
so a resumed run replaces an unfinished one) and is renamed on `close()`; `abort()` drops it; a full
disk is an OutputError. `mcap` and `mcap_ros2` are imported lazily (extra "bags").
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.errors import DataError, InputError, require
from mslseg.runtime.io.atomic import discard, partial_name, writing
from mslseg.runtime.io.result_writers import publish
from mslseg.runtime.io.sources import Frame
from mslseg.runtime.metadata import ModelMeta

LABELS, OVERLAY, CLASSES = "/mslseg/labels", "/mslseg/overlay/compressed", "/mslseg/classes"
FRAME_ID = "camera"  # the header frame_id of frames that come from no bag
JPEG_QUALITY = 90

_SEP = "=" * 80
_TIME = "MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"
_HEADER = f"MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n{_SEP}\n{_TIME}"
# ROS 2 .msg text with its dependencies appended, as rosbag2 and mcap_ros2 store a schema
MSGDEFS = {
    "sensor_msgs/msg/Image": ("std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
                              f"uint8 is_bigendian\nuint32 step\nuint8[] data\n{_SEP}\n{_HEADER}"),
    "sensor_msgs/msg/CompressedImage": f"std_msgs/Header header\nstring format\nuint8[] data\n{_SEP}\n{_HEADER}",
    "std_msgs/msg/String": "string data\n",
}


def _lib(module: str):
    return require(module, "bags", "writing an MCAP (--bag-out)")


def base_topic(source: Any) -> str:
    """The camera topic the outputs hang under: a bag's topic, else /<stem>/image (a valid ROS name)."""
    if getattr(source, "kind", "") == "bag":
        return source.topic
    name = re.sub(r"[^A-Za-z0-9_]", "_", source.stem)
    return f"/{'_' + name if name[:1].isdigit() else name}/image"


def check_bag_out(sources: list[Any]) -> None:
    """InputError when a source has no frame times to stamp messages with (still images)."""
    still = [s.name for s in sources if s.kind == "images"]
    if still:
        raise InputError(f"--bag-out stamps each message with its frame's time, and the images of {still[0]} "
                         "have none; give bags, videos, cameras or streams, or drop --bag-out")


def frame_stamp_ns(frame: Frame, live: bool) -> int:
    """A bag frame's header stamp; a video frame's time; a camera's or stream's wall clock now."""
    if frame.stamp_ns is not None:
        return int(frame.stamp_ns)
    if live or frame.time_s is None:
        return time.time_ns()
    return round(frame.time_s * 1e9)


def _header(stamp_ns: int, frame_id: str) -> dict[str, Any]:
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": frame_id}


def _jpeg(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError(f"cannot encode a {image.shape[1]}x{image.shape[0]} overlay as jpeg")
    return data.tobytes()


def ros2_fields(msg: Any, msgtype: str) -> dict[str, Any]:
    """A decoded Image or CompressedImage (ROS 1 or 2, from any reader) as a ROS 2 message's fields."""
    stamp = msg.header.stamp
    sec, nanosec = ((stamp.sec, stamp.nanosec) if hasattr(stamp, "nanosec")
                    else (stamp.secs, stamp.nsecs))  # mcap-ros1-support's genpy Time
    fields: dict[str, Any] = {"header": {"stamp": {"sec": int(sec), "nanosec": int(nanosec)},
                                         "frame_id": str(msg.header.frame_id)}}
    if msgtype.endswith("CompressedImage"):
        return fields | {"format": str(msg.format), "data": bytes(msg.data)}
    return fields | {"height": int(msg.height), "width": int(msg.width), "encoding": str(msg.encoding),
                     "is_bigendian": int(msg.is_bigendian), "step": int(msg.step), "data": bytes(msg.data)}


class _BagCopy:
    """The source bag's messages on its topic, copied in step with the frames segmented."""

    def __init__(self, source: Any) -> None:
        from mslseg.runtime.io.bag_readers import open_bag

        self.topic, self.msgtype = source.topic, source.msgtype
        self._bag = open_bag(source.path)
        self._messages = enumerate(self._bag.messages(self.topic))
        self._first: int | None = None

    def through(self, index: int, put) -> None:
        """Hand `put(log_ns, fields)` every message from the first frame's index through `index`."""
        from mslseg.runtime.io.bag_readers import BagDamaged

        if self._first is None:
            self._first = index
        try:
            for i, (log_ns, msg) in self._messages:
                if i >= self._first:
                    put(log_ns, ros2_fields(msg, self.msgtype))
                if i >= index:
                    return
        except BagDamaged:  # the frames stop there too; the source reports the damage
            self._messages = enumerate(())

    def close(self) -> None:
        self._bag.close()


class McapOut:
    """One source's `<stem>.mcap` (see the module docstring). `overlay`: write the overlay topic;
    `copy_source`: the camera topic too."""

    def __init__(self, path: Path, source: Any, meta: ModelMeta, *, overlay: bool = True,
                 copy_source: bool = False) -> None:
        check_bag_out([source])
        writer_mod = _lib("mcap_ros2.writer")
        self.path, self._tmp = Path(path), partial_name(path)
        self.base, self.live, self.overlay = base_topic(source), bool(source.live), overlay
        self._classes = json.dumps({"names": list(meta.class_names), "palette": [list(c) for c in meta.palette]})
        self.frames = 0
        self._copy: _BagCopy | None = None
        with writing(self.path):
            self._file = open(self._tmp, "wb")  # noqa: SIM115 (open until close or abort); truncates a killed run's
        try:
            with writing(self.path):
                self._writer = writer_mod.Writer(self._file)
            self._schemas = {name: self._writer.register_msgdef(name, text) for name, text in MSGDEFS.items()}
            if copy_source and source.kind == "bag":
                self._copy = _BagCopy(source)
            self._copy_jpeg = copy_source and source.kind != "bag"
        except BaseException:
            self.abort()
            raise

    def _put(self, topic: str, msgtype: str, message: dict[str, Any], log_ns: int) -> None:
        self._writer.write_message(topic, self._schemas[msgtype], message, log_time=log_ns, publish_time=log_ns)

    def write(self, frame: Frame, labels: np.ndarray, picture: np.ndarray | None) -> None:
        """Frame `frame`'s label map (HxW uint8/uint16) and overlay (BGR; the frame's rows are taken
        when a legend strip makes it taller; None: no overlay message)."""
        stamp = frame_stamp_ns(frame, self.live)
        header = _header(stamp, frame.frame_id or (FRAME_ID if frame.stamp_ns is None else ""))
        labels = np.ascontiguousarray(labels)
        with writing(self.path):
            if not self.frames:
                self._put(self.base + CLASSES, "std_msgs/msg/String", {"data": self._classes}, stamp)
            if self._copy is not None:
                self._copy.through(frame.index, lambda log_ns, m: self._put(
                    self.base, self._copy.msgtype, m, log_ns))
            elif self._copy_jpeg:
                self._put(self.base + "/compressed", "sensor_msgs/msg/CompressedImage",
                          {"header": header, "format": "jpeg", "data": _jpeg(frame.image)}, stamp)
            wide = labels.dtype == np.uint16
            self._put(self.base + LABELS, "sensor_msgs/msg/Image",
                      {"header": header, "height": labels.shape[0], "width": labels.shape[1],
                       "encoding": "mono16" if wide else "mono8", "is_bigendian": int(sys.byteorder == "big"),
                       "step": labels.strides[0], "data": labels.tobytes()}, stamp)
            if self.overlay and picture is not None:
                self._put(self.base + OVERLAY, "sensor_msgs/msg/CompressedImage",
                          {"header": header, "format": "jpeg", "data": _jpeg(picture[: frame.image.shape[0]])},
                          stamp)
        self.frames += 1

    def close(self) -> Path:
        """Finish the file (summary and indexes), fsync it and publish it under its final name."""
        try:
            self._close_copy()
            with writing(self.path):
                self._writer.finish()
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            return publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def _close_copy(self) -> None:
        if self._copy is not None:
            self._copy.close()
            self._copy = None

    def abort(self) -> None:
        with suppress(Exception):
            self._close_copy()
        if hasattr(self, "_file"):
            with suppress(OSError):  # closing flushes what is buffered, which a full disk refuses
                self._file.close()
        discard(self._tmp)

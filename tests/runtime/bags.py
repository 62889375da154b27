"""Real robot bags for tests, written with the libraries robots' tools use (rosbags, mcap).

`write_mcap` (a bare .mcap, ROS 2 CDR or ROS 1), `write_rosbag2` (a rosbag2 folder, sqlite3 or mcap
storage), `write_rosbag1` (.bag) take `topics={"/front/image_raw": frames}` (BGR uint8 frames) and
write one sensor_msgs/Image (raw encodings) or sensor_msgs/CompressedImage (jpeg, png) per frame,
header-stamped with `stamps_ns` and `frame_id`; the log (receive) time is the stamp + LOG_DELAY_NS,
so a test can tell which of the two a reader kept. `truncate` cuts a file short, as a recording
killed mid-write leaves it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
T0_NS = 1_700_000_000_000_000_000  # a plausible epoch stamp, 2023
PERIOD_NS = 33_333_333  # 30 fps
LOG_DELAY_NS = 1_000_000  # receive time after the header stamp


def frames(n: int = 4, h: int = 12, w: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Small random BGR frames, each with one white pixel (so a 16-bit frame's maximum is full scale)."""
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    for f in out:
        f[0, 0] = 255
    return out


def default_stamps(n: int, t0_ns: int = T0_NS, period_ns: int = PERIOD_NS) -> list[int]:
    return [t0_ns + i * period_ns for i in range(n)]


def mosaic_rggb(frame: np.ndarray) -> np.ndarray:
    """A BGR frame as a bayer_rggb8 sensor would have sampled it (R top-left)."""
    m = np.empty(frame.shape[:2], np.uint8)
    m[0::2, 0::2] = frame[0::2, 0::2, 2]
    m[0::2, 1::2] = frame[0::2, 1::2, 1]
    m[1::2, 0::2] = frame[1::2, 0::2, 1]
    m[1::2, 1::2] = frame[1::2, 1::2, 0]
    return m


def _pixels(frame: np.ndarray, encoding: str, bigendian: bool) -> tuple[np.ndarray, int]:
    """(H, W, C) array of the encoding's pixels, bytes per pixel."""
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    table = {
        "bgr8": lambda: frame, "rgb8": lambda: frame[..., ::-1],
        "bgra8": lambda: cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA), "rgba8": lambda: cv2.cvtColor(frame, cv2.COLOR_BGR2RGBA),
        "mono8": lambda: gray, "bayer_rggb8": lambda: mosaic_rggb(frame),
        "mono16": lambda: (gray.astype(np.uint16) * 257).astype(">u2" if bigendian else "<u2"),
        "32FC1": lambda: gray.astype(np.float32),
    }
    pixels = np.ascontiguousarray(table[encoding]())
    pixels = pixels.reshape(*pixels.shape[:2], -1)
    return pixels, pixels.shape[2] * pixels.dtype.itemsize


def _message(ts, ros: int, frame: np.ndarray, encoding: str, stamp_ns: int, frame_id: str, seq: int,
             pad: int, bigendian: bool):
    """(msgtype, message object) of the typestore `ts` for one frame."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    stamp = ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    header_type = ts.types["std_msgs/msg/Header"]
    header = header_type(seq=seq, stamp=stamp, frame_id=frame_id) if ros == 1 else header_type(stamp=stamp,
                                                                                                 frame_id=frame_id)
    if encoding in ("jpeg", "png"):
        ok, buf = cv2.imencode(f".{'jpg' if encoding == 'jpeg' else 'png'}", frame)
        assert ok
        return COMPRESSED, ts.types[COMPRESSED](header=header, format=encoding, data=buf.reshape(-1))
    pixels, pixel_bytes = _pixels(frame, encoding, bigendian)
    h, w = pixels.shape[:2]
    rows = pixels.view(np.uint8).reshape(h, w * pixel_bytes)
    if pad:  # row padding, as some camera drivers align rows
        rows = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    msg = ts.types[IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                          step=rows.shape[1], data=np.ascontiguousarray(rows).reshape(-1))
    return IMAGE, msg


def _records(ts, ros: int, topics: dict[str, Sequence[np.ndarray]], encoding: str, stamps_ns, frame_id: str,
             pad: int, bigendian: bool, text_topics: dict[str, int]):
    """[(log time, topic, msgtype, message)] in log-time order, the way a recorder writes them."""
    out = []
    for topic, topic_frames in topics.items():
        stamps = stamps_ns.get(topic) if isinstance(stamps_ns, dict) else stamps_ns
        stamps = list(stamps) if stamps is not None else default_stamps(len(topic_frames))
        for i, frame in enumerate(topic_frames):
            msgtype, msg = _message(ts, ros, frame, encoding, stamps[i], frame_id, i, pad, bigendian)
            out.append((stamps[i] + LOG_DELAY_NS, topic, msgtype, msg))
    for topic, n in text_topics.items():
        out += [(T0_NS + i * PERIOD_NS, topic, STRING, ts.types[STRING](data=f"hello {i}")) for i in range(n)]
    return sorted(out, key=lambda r: r[0])


def _typestore(ros: int):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC if ros == 1 else Stores.ROS2_HUMBLE)


def write_rosbag2(folder: str | Path, topics: dict[str, Sequence[np.ndarray]], encoding: str = "bgr8", *,
                  storage: str = "sqlite3", stamps_ns=None, frame_id: str = "front", pad: int = 0,
                  bigendian: bool = False, text_topics: dict[str, int] | None = None) -> Path:
    """A rosbag2 folder (metadata.yaml + one .db3 or .mcap) written by rosbags' Writer."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts, folder = _typestore(2), Path(folder)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(folder, version=9, storage_plugin=plugin) as writer:
        connections: dict[str, object] = {}
        for log_ns, topic, msgtype, msg in _records(ts, 2, topics, encoding, stamps_ns, frame_id, pad, bigendian,
                                                    text_topics or {}):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(connections[topic], log_ns, ts.serialize_cdr(msg, msgtype))
    return folder


def write_rosbag2_sqlite(folder: str | Path, topics: dict[str, Sequence[np.ndarray]], encoding: str = "bgr8",
                         **kwargs) -> Path:
    return write_rosbag2(folder, topics, encoding, storage="sqlite3", **kwargs)


def write_rosbag1(path: str | Path, topics: dict[str, Sequence[np.ndarray]], encoding: str = "bgr8", *,
                  stamps_ns=None, frame_id: str = "front", pad: int = 0, bigendian: bool = False,
                  text_topics: dict[str, int] | None = None) -> Path:
    """A ROS 1 .bag written by rosbags' rosbag1 Writer."""
    from rosbags.rosbag1 import Writer

    ts, path = _typestore(1), Path(path)
    with Writer(path) as writer:
        connections: dict[str, object] = {}
        for log_ns, topic, msgtype, msg in _records(ts, 1, topics, encoding, stamps_ns, frame_id, pad, bigendian,
                                                    text_topics or {}):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(connections[topic], log_ns, ts.serialize_ros1(msg, msgtype))
    return path


def write_mcap(path: str | Path, topics: dict[str, Sequence[np.ndarray]], encoding: str = "bgr8", *, ros: int = 2,
               stamps_ns=None, frame_id: str = "front", pad: int = 0, bigendian: bool = False,
               text_topics: dict[str, int] | None = None, chunk_size: int | None = None) -> Path:
    """A bare .mcap. ROS 2 by default as rosbags' rosbag2 MCAP storage writes it (moved out of its
    folder; 1 MiB chunks); ROS 1, or ROS 2 with `chunk_size` (small chunks, so that a truncated file
    keeps whole chunks before the cut), through `mcap`'s Writer with ros1msg/ros2msg schemas."""
    path = Path(path)
    kwargs = dict(stamps_ns=stamps_ns, frame_id=frame_id, pad=pad, bigendian=bigendian, text_topics=text_topics)
    if ros == 2 and chunk_size is None:
        folder = path.with_name(path.stem + "_rosbag2")
        write_rosbag2(folder, topics, encoding, storage="mcap", **kwargs)
        shutil.move(str(folder / f"{folder.name}.mcap"), str(path))
        shutil.rmtree(folder)
        return path
    from mcap.writer import Writer

    ts = _typestore(ros)
    serialize = ts.serialize_ros1 if ros == 1 else ts.serialize_cdr
    with path.open("wb") as f:
        writer = Writer(f, chunk_size=chunk_size or 1024 * 1024)
        writer.start(profile=f"ros{ros}", library="mslseg-tests")
        channels: dict[str, int] = {}
        for log_ns, topic, msgtype, msg in _records(ts, ros, topics, encoding, stamps_ns, frame_id, pad, bigendian,
                                                    text_topics or {}):
            if topic not in channels:
                name = msgtype.replace("/msg/", "/") if ros == 1 else msgtype
                schema = writer.register_schema(name=name, encoding=f"ros{ros}msg",
                                                data=ts.generate_msgdef(msgtype, ros_version=ros)[0].encode())
                channels[topic] = writer.register_channel(topic=topic, message_encoding="ros1" if ros == 1 else "cdr",
                                                          schema_id=schema)
            writer.add_message(channel_id=channels[topic], log_time=log_ns, publish_time=log_ns,
                               data=bytes(serialize(msg, msgtype)))
        writer.finish()
    return path


def truncate(path: str | Path, n_bytes: int) -> Path:
    """Cut the last `n_bytes` off a file (a recording killed before it finished writing)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - n_bytes])
    return path

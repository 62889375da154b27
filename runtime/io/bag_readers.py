"""Open a robot bag with the library that reads its format best, behind one small interface.

- A bare `.mcap` file: `mcap` with the `mcap-ros2-support` and `mcap-ros1-support` decoders. rosbags'
  AnyReader reads only ROS 2 (CDR) MCAP files and refuses ROS 1 ones ("Profile is not ros2"); `mcap`
  decodes both, and when the summary at the end of a file is lost (a recording cut short) it still
  streams the chunks before the damage, which is what a truncated file needs.
- A ROS 1 `.bag`, a rosbag2 folder (metadata.yaml with sqlite3 or mcap storage) or a lone `.db3`:
  rosbags' AnyReader, the one pure-Python reader of all three; its default typestore (Noetic,
  Humble) decodes bags recorded without message definitions (rosbag2 before Iron stores none).

Each reader gives its topics (ROS 2 style type names, message counts where an index has them) and
yields (log time ns, decoded message) per topic; damage met while reading raises `BagDamaged`.
The libraries are imported here, lazily (`require`, the "bags" extra), never at module import.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mslseg.runtime.errors import DataError, InputError, require
from mslseg.runtime.io.media import BAG_SUFFIXES, ROSBAG2_METADATA

MCAP_MAGIC = b"\x89MCAP0\r\n"


class BagDamaged(Exception):
    """Reading stopped inside a bag (a truncated or corrupt file); args[0] says what the library met."""


@dataclass(frozen=True)
class TopicEntry:
    msgtype: str  # ROS 2 style: sensor_msgs/msg/Image
    count: int | None  # messages; None where no index counts them


def ros2_type(name: str) -> str:
    """'sensor_msgs/Image' (ROS 1) -> 'sensor_msgs/msg/Image'; ROS 2 names unchanged."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


def _lib(module: str):
    return require(module, "bags", "reading robot bags")


class McapBag:
    """A bare .mcap file through `mcap`: the summary's counts, or one scan of the chunks when it is lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        reader_mod = _lib("mcap.reader")
        self._factories = [_lib("mcap_ros2.decoder").DecoderFactory(), _lib("mcap_ros1.decoder").DecoderFactory()]
        self._file = path.open("rb")
        if self._file.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            self.close()
            raise DataError(f"{path.name} is not a readable MCAP file (it does not start with the MCAP magic bytes)")
        self._file.seek(0)
        self._reader = reader_mod.make_reader(self._file, decoder_factories=self._factories)
        try:
            summary = self._reader.get_summary()
        except Exception:  # a lost or damaged footer: the file was cut short; scan instead
            summary = None
        self.indexed = bool(summary and summary.statistics and summary.chunk_indexes)
        try:
            self.topics = self._indexed_topics(summary) if self.indexed else self._scanned_topics()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _indexed_topics(summary) -> dict[str, TopicEntry]:
        counts = summary.statistics.channel_message_counts
        topics: dict[str, TopicEntry] = {}
        for cid, channel in summary.channels.items():
            schema = summary.schemas.get(channel.schema_id)
            previous = topics.get(channel.topic)
            count = counts.get(cid, 0) + (previous.count if previous else 0)
            topics[channel.topic] = TopicEntry(ros2_type(schema.name) if schema else "", count)
        return topics

    def _scanned_topics(self) -> dict[str, TopicEntry]:
        """Count messages by reading every chunk up to the end or the damage (messages are not decoded)."""
        types: dict[str, str] = {}
        counts: dict[str, int] = {}
        try:
            for schema, channel, _ in self._stream().iter_messages(log_time_order=False):
                types.setdefault(channel.topic, ros2_type(schema.name) if schema else "")
                counts[channel.topic] = counts.get(channel.topic, 0) + 1
        except Exception as exc:  # damage: what came before it is kept and counted
            if not counts:
                raise DataError(f"{self.path.name} is not a readable MCAP file ({exc or type(exc).__name__})") from None
        return {t: TopicEntry(types[t], counts[t]) for t in types}

    def _stream(self):
        self._file.seek(0)
        return _lib("mcap.reader").NonSeekingReader(self._file, decoder_factories=self._factories)

    def messages(self, topic: str) -> Iterator[tuple[int, Any]]:
        reader = self._reader if self.indexed else self._stream()
        try:
            for item in reader.iter_decoded_messages(topics=[topic], log_time_order=self.indexed):
                yield item.message.log_time, item.decoded_message
        except Exception as exc:
            raise BagDamaged(str(exc) or type(exc).__name__) from None

    def close(self) -> None:
        self._file.close()


class RosbagsBag:
    """A ROS 1 .bag, a rosbag2 folder or a lone .db3 through rosbags' AnyReader."""

    def __init__(self, path: Path) -> None:
        self.path = path
        highlevel, typesys = _lib("rosbags.highlevel"), _lib("rosbags.typesys")
        store = typesys.Stores.ROS1_NOETIC if path.suffix.lower() == ".bag" else typesys.Stores.ROS2_HUMBLE
        try:
            self._reader = highlevel.AnyReader([path], default_typestore=typesys.get_typestore(store))
            self._reader.open()
        except Exception as exc:
            raise DataError(f"{path.name} is not a readable {_kind(path)} ({_why(exc)})") from None
        self.indexed = True
        self.topics = {name: TopicEntry(ros2_type(info.msgtype or ""), info.msgcount)
                       for name, info in self._reader.topics.items()}

    def messages(self, topic: str) -> Iterator[tuple[int, Any]]:
        reader = self._reader
        try:
            for connection, log_ns, raw in reader.messages(reader.topics[topic].connections):
                yield log_ns, reader.deserialize(raw, connection.msgtype)
        except Exception as exc:
            raise BagDamaged(_why(exc)) from None

    def close(self) -> None:
        if self._reader.stack is not None:
            self._reader.close()


def _kind(path: Path) -> str:
    return "ROS 1 bag" if path.suffix.lower() == ".bag" else "rosbag2 bag"


def _why(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "index looks damaged" in text or "not indexed" in text.lower():
        return f"{text}; a ROS 1 bag cut short loses its index: run `rosbag reindex` on a copy"
    return text


def open_bag(path: str | Path) -> McapBag | RosbagsBag:
    """The reader for `path`; DataError for a missing or unreadable bag, InputError for what is no bag."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; give an .mcap, .bag or .db3 file or a rosbag2 folder")
    if path.is_dir():
        if not (path / ROSBAG2_METADATA).is_file():
            raise InputError(f"{path} is a folder without {ROSBAG2_METADATA}, so not a rosbag2 bag; "
                             "give the bag's folder or one of its .mcap/.db3 files")
        return RosbagsBag(path)
    suffix = path.suffix.lower()
    if suffix not in BAG_SUFFIXES:
        raise InputError(f"{path.name} is not a bag; give an .mcap, .bag or .db3 file or a rosbag2 folder")
    return McapBag(path) if suffix == ".mcap" else RosbagsBag(path)

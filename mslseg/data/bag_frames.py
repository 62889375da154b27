"""Unlabelled target frames straight from robot bags (one image topic), so recordings need no extraction.

Which frames: the rule videos follow (`video_frames.frame_positions`: every `stride`-th message of the
topic, or `frames` spread evenly; by default every 30th, denser in a short bag so that at least 100
are kept). Bags have no cheap random access by message number (a ROS 1 bag or a rosbag2 sqlite file is
read in order), so the chosen frames are read in one pass per bag at construction and kept in memory
as lossless PNG bytes (about half a raw frame each): every 30th frame of an hour at 30 fps is 3600
frames, some 2-3 GB at 640x480; set `video_frames` to keep fewer. PNG bytes pickle cheaply to
DataLoader workers, and a frame decodes to exactly the pixels the bag holds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from mslseg.data.video_frames import frame_positions
from mslseg.runtime.errors import ConfigError, DataError
from mslseg.runtime.io.media import suffix_list

log = logging.getLogger(__name__)


def find_bags(spec: str) -> list[Path]:
    """The bags `spec` names: an .mcap/.bag/.db3 file, a rosbag2 folder, a folder of bags, or a glob."""
    from mslseg.runtime.io.sources import local_files

    bags = local_files(str(Path(spec).expanduser()))[2]
    if not bags:
        raise DataError(f"no bags ({suffix_list('bag')}) found at {spec}; check the path or pattern")
    return bags


class BagFrames:
    """A `SampleReader` over frames of one image topic of one or more bags (unlabelled)."""

    labelled = False

    def __init__(self, bags: list[Path], topic: str | None, stride: int | None = None, frames: int | None = None,
                 limit: int | None = None):
        if not topic:
            from mslseg.runtime.io.bags import list_image_topics

            found = ", ".join(t.name for t in list_image_topics(bags[0])) or "none"
            raise ConfigError(f"a bag target needs its image topic: set --topic (config: target.topic); "
                              f"the image topics of {bags[0].name}: {found}")
        self.topic, self.bags, self.available = topic, len(bags), 0
        self.index: list[tuple[str, bytes]] = []  # (name, PNG bytes)
        for bag in bags:
            if limit is not None and len(self.index) >= limit:
                break
            self.index += self._read(bag, stride, frames, None if limit is None else limit - len(self.index))
        log.info("bag: %s", self.describe())

    def _read(self, bag: Path, stride: int | None, frames: int | None, left: int | None) -> list[tuple[str, bytes]]:
        from mslseg.runtime.io.bags import BagSource
        from mslseg.runtime.io.sources import FrameRange

        count = BagSource(bag, self.topic).frame_count
        self.available += count
        wanted = frame_positions(count, stride, frames)[:left]
        steps = set(np.diff(wanted).tolist())  # read only every k-th message when the positions are regular
        source = BagSource(bag, self.topic, FrameRange(end=str(wanted[-1] + 1),
                                                       stride=steps.pop() if len(steps) == 1 else 1))
        keep, taken = set(wanted), []
        for frame in source:
            if frame.index in keep:
                ok, data = cv2.imencode(".png", frame.image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
                taken.append((f"{bag.name}{self.topic}#{frame.index:06d}_{frame.stamp_ns}", data.tobytes()))
        for problem in source.problems:  # a truncated bag: the frames before the damage are used
            log.warning("%s", problem)
        if not taken:
            raise DataError(f"no frames of {self.topic} could be read from {bag}")
        return taken

    def __len__(self) -> int:
        return len(self.index)

    def describe(self) -> str:
        """How many frames were taken from how many: "120 frames of /cam (of 3600 in 1 bag)"."""
        return (f"{len(self.index)} frames of {self.topic} (of {self.available} in {self.bags} "
                f"bag{'s' * (self.bags != 1)})")

    def load(self, index: int) -> tuple[np.ndarray, None, str]:
        name, data = self.index[index]
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), None, name

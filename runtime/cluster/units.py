"""The units of a cluster run, without Ray: which sources, how a worker opens one, its area rows.

A unit is one source as a local run would see it: a video file, a bag's topic (the topic travels in
the unit), or the images of one SOURCE argument together. `plan_units` lists them as `open_sources` does, but without opening any file,
so one unreadable video becomes a problem of its own unit instead of stopping the archive.
Cameras and streams cannot be split across workers: they are refused.

A worker does not write the shared areas table: it keeps its source's rows (`AreaRows`) and
saves them as a part (`.parts/<stem>.npz`, exact values, atomically); the driver appends the
parts to areas.csv / areas.jsonl in source order, so the table is the one a local run writes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.errors import InputError
from mslseg.runtime.io.atomic import atomic_write_bytes, final_name, remove_temporary, temporaries
from mslseg.runtime.io.media import is_video
from mslseg.runtime.io.sources import (
    URL_SCHEMES,
    FrameRange,
    ImageSequence,
    VideoSource,
    local_files,
    safe_stem,
    topic_required,
)

PARTS_FOLDER = ".parts"  # per-source area rows of a cluster run, until the driver appends them


@dataclass(frozen=True)
class SourceUnit:
    """One source of a cluster run, as plain data (a worker opens it itself)."""

    name: str  # as a local run names it (the path as given, the SOURCE argument for images, bag:topic)
    kind: str  # "video" | "images" | "bag"
    paths: tuple[str, ...]  # the video or bag (one), or the images in order
    topic: str | None = None  # a bag's image topic

    @property
    def stem(self) -> str:
        if self.kind == "bag":  # as BagSource names it
            from mslseg.runtime.io.bags import bag_stem

            return bag_stem(self.paths[0], self.topic)
        return safe_stem(self.name)


def plan_units(specs: list[str], topic: str | None = None) -> list[SourceUnit]:
    """The sources of SOURCE arguments in a local run's order, no file opened (see the module doc);
    `topic`: the image topic of every bag (bags without one: InputError listing the first's topics)."""
    units: list[SourceUnit] = []
    for spec in map(str, specs):
        if spec.isdigit() or (spec.lower().startswith(URL_SCHEMES) and not _is_video_url(spec)):
            raise InputError(f"{spec} is a camera or a live stream, which a cluster run cannot split across "
                             "workers; run it without --cluster")
        if spec.lower().startswith(URL_SCHEMES):
            units.append(SourceUnit(spec, "video", (spec,)))
            continue
        videos, images, bags = local_files(spec)
        if bags and topic is None:
            raise topic_required(bags)
        # names as a local run gives them; paths absolute, for workers whose folder is not the driver's
        units.extend(SourceUnit(str(p), "video", (os.path.abspath(p),)) for p in videos)
        if images:
            units.append(SourceUnit(spec, "images", tuple(os.path.abspath(p) for p in images)))
        units.extend(SourceUnit(f"{p}:{topic}", "bag", (os.path.abspath(p),), topic) for p in bags)
    return units


def _is_video_url(spec: str) -> bool:
    return spec.startswith("http") and is_video(spec)


def open_unit(unit: SourceUnit, frames: FrameRange) -> Any:
    """The source of `unit`, as `open_sources` opens it (DataError / InputError if it cannot be)."""
    if unit.kind == "images":
        return ImageSequence([Path(p) for p in unit.paths], unit.name, frames)
    if unit.kind == "bag":
        from mslseg.runtime.io.bags import BagSource

        source = BagSource(unit.paths[0], unit.topic, frames)
        source.name = unit.name  # the path as given, not the worker's absolute one
        return source
    return VideoSource(unit.paths[0], unit.name, "video", frames)


class AreaRows:
    """Collects a source's area rows (AreaTable's `write`) and saves them as a part file."""

    def __init__(self) -> None:
        self.index: list[int] = []
        self.time_s: list[float] = []
        self.image: list[str] = []
        self.fractions: list[np.ndarray] = []
        self.stamp_ns: list[int] = []  # -1: none (not a bag frame)

    def write(self, source: str, index: int, time_s: float | None, image: str, fractions: np.ndarray,
              stamp_ns: int | None = None) -> None:
        self.index.append(index)
        self.time_s.append(np.nan if time_s is None else time_s)
        self.image.append(image)
        self.fractions.append(np.asarray(fractions, np.float64))
        self.stamp_ns.append(-1 if stamp_ns is None else stamp_ns)

    def save(self, path: Path) -> Path:
        buffer = io.BytesIO()
        fractions = np.stack(self.fractions) if self.fractions else np.zeros((0, 0))
        np.savez(buffer, index=np.asarray(self.index, np.int64), time_s=np.asarray(self.time_s, np.float64),
                 image=np.asarray(self.image, dtype=str), fractions=fractions,
                 stamp_ns=np.asarray(self.stamp_ns, np.int64))
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(path, buffer.getvalue(), sync=False)


def append_part(table, source: str, part: Path) -> int:  # table: AreaTable
    """Write the rows of a part file into `table` with the values the worker computed; returns the count."""
    with np.load(part, allow_pickle=False) as data:
        index, times, images, fractions = data["index"], data["time_s"], data["image"], data["fractions"]
        stamps = data["stamp_ns"] if "stamp_ns" in data else np.full(len(index), -1)  # a part of an older run
    for i in range(len(index)):
        t = None if np.isnan(times[i]) else float(times[i])
        table.write(source, int(index[i]), t, str(images[i]), fractions[i], None if stamps[i] < 0 else int(stamps[i]))
    return len(index)


def part_path(out: Path, stem: str) -> Path:
    return out / PARTS_FOLDER / f"{stem}.npz"


def discard_partials(out: Path, stem: str) -> None:
    """Remove what a killed worker left of a source under temporary names (never a final name), as
    `mslseg.runtime.io.atomic` names them (this version's names and earlier ones). Only this source's:
    other workers write beside it. An image overlay is written atomically per file: at most one hidden
    .tmp of it can be left, under a name this source does not own alone."""
    finals = {out / f"{stem}_overlay.mp4", out / "labels" / stem, out / "labels" / f"{stem}.npz",
              out / f"{stem}.mcap"}  # --bag-out
    for folder in (out, out / "labels"):
        for path in temporaries(folder):
            if final_name(path) in finals:
                remove_temporary(path)
    part = part_path(out, stem)
    if part.exists() or part.is_symlink():
        part.unlink(missing_ok=True)

"""Label maps and class-area tables, written crash-safely and with flat memory on long videos.

- `LabelPngFolder`: one lossless PNG per frame (8-bit, 16-bit past 255 classes) into a hidden
  partial folder that is renamed to its final name when the source is complete.
- `LabelNpz`: one compressed .npz per video, streamed: each frame is its own array entry
  (``frame_000123``), plus ``frame_index``, ``class_names`` and, for a bag, ``stamp_ns`` (the frames'
  header stamps, ns); nothing accumulates in memory.
- `AreaTable`: per frame, the fraction of pixels of each class, as CSV or JSON Lines; `stamp_ns` is a
  bag frame's header stamp (empty / null for other sources).
Every writer has `close()` (publish under the final name, or drop the partial file if that fails)
and `abort()` (drop the partial file).
A full disk, a file-size limit or a read-only folder raises OutputError (runtime/io/atomic.py).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import zipfile
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.errors import DataError
from mslseg.runtime.io.atomic import atomic_path, discard, partial_name, writing
from mslseg.runtime.metadata import ModelMeta


def publish(tmp: Path, final: Path) -> Path:
    """Rename `tmp` to `final`, replacing a file or folder there (only --overwrite lets one exist)."""
    with writing(final):
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    return final


class LabelPngFolder:
    def __init__(self, folder: Path) -> None:
        self.path, self._tmp = folder, partial_name(folder)
        shutil.rmtree(self._tmp, ignore_errors=True)
        with writing(folder):
            self._tmp.mkdir(parents=True)

    def write(self, name: str, labels: np.ndarray) -> None:
        import cv2

        ok, data = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise DataError(f"cannot encode the label map {name} as PNG")
        with writing(self.path, what=f"{self.path.name}/{name}.png"):
            (self._tmp / f"{name}.png").write_bytes(data.tobytes())

    def close(self) -> Path:
        try:
            return publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


class LabelNpz:
    def __init__(self, path: Path, meta: ModelMeta) -> None:
        self.path, self._tmp = path, partial_name(path)
        with writing(path):
            self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        self._indices: list[int] = []
        self._stamps: list[int] = []  # bag frames only: every frame of a bag has one
        self._names = np.asarray(meta.class_names)

    def _put(self, name: str, array: np.ndarray) -> None:
        with writing(self.path), self._zip.open(f"{name}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)

    def write(self, index: int, labels: np.ndarray, stamp_ns: int | None = None) -> None:
        self._put(f"frame_{index:06d}", labels)
        self._indices.append(index)
        if stamp_ns is not None:
            self._stamps.append(stamp_ns)

    def close(self) -> Path:
        try:
            self._put("frame_index", np.asarray(self._indices, np.int64))
            self._put("class_names", self._names)
            if self._stamps:
                self._put("stamp_ns", np.asarray(self._stamps, np.int64))
            with writing(self.path):
                self._zip.close()
                with open(self._tmp, "rb+") as f:
                    os.fsync(f.fileno())
            return publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with suppress(Exception):  # closing writes the zip directory, which a full disk refuses
            self._zip.close()
        discard(self._tmp)


class AreaTable:
    """fmt "csv": columns source, frame, time_s, image, stamp_ns, then one per class; "json": one object a line."""

    def __init__(self, path: Path, meta: ModelMeta, fmt: str, *, keep_sources: set[str] = frozenset()) -> None:
        """`keep_sources`: start with those sources' rows of an existing table at `path` (a resumed run)."""
        self.path, self._tmp, self._fmt = path, partial_name(path), fmt
        self._names = list(meta.class_names)
        with writing(path):
            self._file = open(self._tmp, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file) if fmt == "csv" else None
        try:
            with writing(path):
                if self._csv:
                    self._csv.writerow(["source", "frame", "time_s", "image", "stamp_ns", *self._names])
                if keep_sources and path.is_file():
                    self._keep(keep_sources)
        except BaseException:
            self.abort()
            raise

    def _keep(self, sources: set[str]) -> None:
        """Copy `sources`' rows; a table written before rows had stamp_ns gets an empty one."""
        with open(self.path, newline="", encoding="utf-8") as old:
            if self._csv:
                header, *rows = list(csv.reader(old)) or [[]]
                stamped = header[4:5] == ["stamp_ns"]
                self._csv.writerows(r if stamped else [*r[:4], "", *r[4:]] for r in rows if r and r[0] in sources)
                return
            for line in old:
                row = json.loads(line)
                if row["source"] in sources:
                    row = {k: row.get(k) for k in ("source", "frame", "time_s", "image", "stamp_ns")} | row
                    self._file.write(json.dumps(row) + "\n")

    def snapshot(self) -> Path:
        """Publish the rows so far under the final name (the table keeps growing in its temp file)."""
        with writing(self.path):
            self._file.flush()
        with atomic_path(self.path) as copy:
            shutil.copyfile(self._tmp, copy)
        return self.path

    def _write(self, source: str, index: int, time_s: float | None, image: str, fractions: np.ndarray,
               stamp_ns: int | None) -> None:
        t = None if time_s is None else round(time_s, 4)
        if self._csv:
            self._csv.writerow([source, index, "" if t is None else t, image, "" if stamp_ns is None else stamp_ns,
                                *(f"{v:.6f}" for v in fractions)])
        else:
            areas = {n: round(float(v), 6) for n, v in zip(self._names, fractions, strict=True)}
            row: dict[str, Any] = {"source": source, "frame": index, "time_s": t, "image": image,
                                   "stamp_ns": stamp_ns, "areas": areas}
            self._file.write(json.dumps(row) + "\n")

    def write(self, source: str, index: int, time_s: float | None, image: str, fractions: np.ndarray,
              stamp_ns: int | None = None) -> None:
        with writing(self.path):
            self._write(source, index, time_s, image, fractions, stamp_ns)

    def close(self) -> Path:
        try:
            with writing(self.path):
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            return publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with suppress(OSError):  # closing flushes what is buffered, which a full disk refuses
            self._file.close()
        discard(self._tmp)

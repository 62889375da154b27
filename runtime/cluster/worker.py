"""The worker of a cluster run: one Segmenter, loaded once, that segments one unit at a time.

The driver (runtime/cluster/run.py) wraps `SegmentWorker` as a Ray actor with two threads
(max_concurrency=2): one runs `run`, the other answers `progress` and `stop` while it does.
This module imports no Ray: it is plain Python, testable without a cluster.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mslseg.runtime.cluster.units import AreaRows, SourceUnit, open_unit, part_path
from mslseg.runtime.infer_job import STAGES, InferOptions, SourceReport, segment_source
from mslseg.runtime.io.sources import FrameRange
from mslseg.runtime.io.viz import palette_lut
from mslseg.runtime.segmenter import Segmenter


class SegmentWorker:
    """Holds one Segmenter; `run(unit)` writes a source's outputs as a local run does."""

    def __init__(self, name: str, model: str, segmenter_options: dict[str, Any], opts: InferOptions,
                 frames: dict[str, Any]) -> None:
        self.name, self.opts, self.frames = name, opts, FrameRange(**frames)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: tuple[int, int] | None = None  # (unit number, frames written)
        self.segmenter: Segmenter | None = None
        self._error: BaseException | None = None
        try:  # kept for `ready` to raise: a constructor's error would reach the driver as a dead actor
            self.segmenter = Segmenter(Path(model), **segmenter_options)
            self.lut = palette_lut(self.segmenter.meta, "bgr")
        except Exception as exc:
            self._error = exc

    def ready(self) -> dict[str, Any]:
        """Who and where this worker is, and the model as it loaded here (its error if it did not)."""
        if self._error is not None:
            raise self._error
        seg = self.segmenter
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(), "model": seg.describe(),
                "run_size": seg.describe_size(), "meta": seg.meta}

    def run(self, number: int, unit: SourceUnit, stem: str) -> dict[str, Any]:
        """Segment `unit` into the output folder; returns its report, stage totals (ms), seconds, CPU seconds.

        A source that cannot be opened is a report with that problem, not an error. Stopped early
        (`stop`), its files are published as a prefix and the report says `complete: False`.
        """
        report = SourceReport(unit.name, unit.kind)
        totals = dict.fromkeys(STAGES, 0.0)
        start = (time.perf_counter(), time.process_time())
        with self._lock:
            self._current = (number, 0)
        try:
            from mslseg.runtime.errors import DataError, InputError

            try:
                source = open_unit(unit, self.frames)
            except (DataError, InputError) as exc:
                report.problems.append(str(exc))
                return self._result(number, report, totals, start)
            report.expected = source.expected
            rows = AreaRows() if self.opts.areas != "none" else None
            try:
                segment_source(source, stem, self.segmenter, self.opts, report, totals, lut=self.lut,
                               areas=rows, stop=self._stop, on_frame=self._on_frame)
            finally:
                source.close()
            if rows is not None and report.frames:
                rows.save(part_path(self.opts.out, stem))
            report.complete = bool(report.frames) and not self._stop.is_set()
            return self._result(number, report, totals, start)
        finally:
            with self._lock:
                self._current = None

    def _on_frame(self, report: SourceReport) -> None:
        with self._lock:
            if self._current is not None:
                self._current = (self._current[0], report.frames)

    def _result(self, number: int, report: SourceReport, totals: dict[str, float],
                start: tuple[float, float]) -> dict[str, Any]:
        return {"number": number, "report": asdict(report), "totals": totals, "worker": self.name, "pid": os.getpid(),
                "seconds": time.perf_counter() - start[0],
                "cpu_s": time.process_time() - start[1]}  # this process's CPU time: all its threads

    def progress(self) -> tuple[int, int] | None:
        """(unit number, frames written so far) of the unit under way, or None when idle."""
        with self._lock:
            return self._current

    def stop(self) -> None:
        """End the unit under way at the next batch (its files closed as a prefix) and take no more."""
        self._stop.set()

    def close(self) -> None:
        if self.segmenter is not None:
            self.segmenter.close()

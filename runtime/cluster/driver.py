"""The driver of a cluster run: workers (Ray actors), units handed out in order, deaths handled,
area parts appended to the table in source order, done markers after the rows, the summary.

`run_cluster` (runtime/cluster/run.py) builds a `ClusterJob` on a Ray connection and runs it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mslseg.runtime.backends.base import backend_options
from mslseg.runtime.cluster.options import ClusterProgress, ClusterSummary, plan_workers
from mslseg.runtime.cluster.units import PARTS_FOLDER, SourceUnit, append_part, discard_partials, open_unit, part_path
from mslseg.runtime.errors import MslsegError
from mslseg.runtime.infer_job import (
    STAGES,
    InferOptions,
    SourceReport,
    load_marker,
    marker_path,
    unique_stems,
    write_marker,
)
from mslseg.runtime.io.atomic import atomic_write_text
from mslseg.runtime.io.result_writers import AreaTable

log = logging.getLogger(__name__)
SNAPSHOT_EVERY_S = 2.0  # publish the areas table (then the new done markers) at most this often
POLL_S = 0.5  # how often the driver asks the busy workers how far they are


@dataclass
class _Slot:
    name: str
    actor: Any
    info: dict[str, Any]
    unit: int | None = None
    ref: Any = None


class ClusterJob:
    """The driver's state: units, workers, results in source order, the areas table."""

    def __init__(self, ray, units, model, opts, cluster, segmenter_options, frames, stop, on_progress,
                 on_plan, where) -> None:
        self.ray, self.units, self.cluster, self.stop = ray, units, cluster, stop
        self.out_given = opts.out  # as the user gave it: reports name outputs under it, as a local run does
        self.opts = InferOptions(**{**asdict(opts), "out": opts.out.absolute()})  # workers may start elsewhere
        self.on_progress, self.on_plan, self.where = on_progress, on_plan or log.info, where
        self.model = str(Path(model).absolute())
        self.frame_args = {"start": frames.start, "end": frames.end, "stride": frames.stride}
        self.frames = frames
        if "threads" in backend_options(model):  # not one per core of a node shared by workers
            segmenter_options = {"threads": max(1, int(cluster.cpus_per_worker)), **segmenter_options}
        self.segmenter_options = segmenter_options  # an engine takes no threads: none are passed
        self.stems = unique_stems([u.stem for u in units])
        self.results: list[dict[str, Any] | None] = [None] * len(units)
        self.attempts = [0] * len(units)
        self.resumed: list[SourceReport | None] = [None] * len(units)
        self.restarts = 0
        self.slots: list[_Slot] = []
        self.workers_seen: list[dict[str, Any]] = []
        self.table: AreaTable | None = None
        self.next_append = 0
        self.unmarked: list[int] = []  # complete units whose rows are in the table, awaiting a snapshot
        self._snapshot_at = 0.0

    # -- workers ---------------------------------------------------------------------------------

    def _start_worker(self, name: str) -> _Slot:
        from mslseg.runtime.cluster.worker import SegmentWorker

        remote = self.ray.remote(num_cpus=self.cluster.cpus_per_worker, num_gpus=self.cluster.gpus_per_worker,
                                 max_concurrency=2, max_restarts=0)(SegmentWorker)
        actor = remote.remote(name, self.model, self.segmenter_options, self.opts, self.frame_args)
        return _Slot(name, actor, {})

    def _ready(self, slots: list[_Slot]) -> None:
        try:
            infos = self.ray.get([s.actor.ready.remote() for s in slots])
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, MslsegError):
                raise type(cause)(f"a worker cannot load the model: {cause}") from None
            raise
        for slot, info in zip(slots, infos, strict=True):
            slot.info = info
            self.workers_seen.append({k: info[k] for k in ("name", "pid", "host")})

    def _replace(self, slot: _Slot) -> None:
        self.restarts += 1
        new = self._start_worker(slot.name)
        self._ready([new])
        slot.actor, slot.info, slot.unit, slot.ref = new.actor, new.info, None, None

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> ClusterSummary:
        opts = self.opts
        pending: deque[int] = deque()
        for i, stem in enumerate(self.stems):
            if opts.resume and marker_path(opts.out, stem).is_file():
                self.resumed[i] = load_marker(marker_path(opts.out, stem))
            else:
                discard_partials(opts.out, stem)  # what a killed run's worker left: not this run's
                pending.append(i)
        expected = self._probe([self.units[i] for i in pending])
        n, why = plan_workers(self.ray.cluster_resources(), self.cluster, len(pending))
        self.on_plan(f"cluster: {self.where}; {why}")
        start = time.perf_counter()
        try:
            names = self._start_workers(n)  # the model loads on each: its errors come before any file
            opts.out.mkdir(parents=True, exist_ok=True)
            if opts.areas != "none":
                name = "areas.csv" if opts.areas == "csv" else "areas.jsonl"
                keep = {u.name for u, r in zip(self.units, self.resumed, strict=True) if r is not None}
                self.table = AreaTable(opts.out / name, _Names(names), opts.areas, keep_sources=keep)
            if pending:
                self._loop(pending, dict(zip(pending, expected, strict=True)))
            self._append(final=True)
            if self.table is not None:
                self.table.close()
                self.table = None
            self._mark()
        except BaseException:
            self._abandon()
            raise
        finally:
            for slot in self.slots:
                self.ray.kill(slot.actor)
        return self._summary(time.perf_counter() - start)

    def _start_workers(self, n: int) -> list[str]:
        """Start `n` workers and wait until each has loaded the model; returns its class names."""
        self.slots = [self._start_worker(f"w{k + 1}") for k in range(n)]
        self._ready(self.slots)
        self.model_desc = self.slots[0].info["model"]
        self.run_size = self.slots[0].info["run_size"]
        return list(self.slots[0].info["meta"].class_names)

    def _probe(self, units: list[SourceUnit]) -> list[int | None]:
        """Frame counts for the progress bar (opened here, in threads; a worker reports problems)."""
        def count(unit: SourceUnit) -> int | None:
            try:
                source = open_unit(unit, self.frames)
            except MslsegError:
                return None
            source.close()
            return source.expected

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(count, units))

    def _loop(self, pending: deque[int], expected: dict[int, int | None]) -> None:
        last_poll = 0.0
        stopping = False
        while True:
            if self.stop.is_set() and not stopping:
                stopping = True
                for slot in self.slots:
                    if slot.ref is not None:
                        slot.actor.stop.remote()
            if not stopping:
                for slot in self.slots:
                    if slot.ref is None and pending:
                        i = pending.popleft()
                        slot.unit, slot.ref = i, slot.actor.run.remote(i, self.units[i], self.stems[i])
            busy = [s for s in self.slots if s.ref is not None]
            if not busy:
                return
            done, _ = self.ray.wait([s.ref for s in busy], num_returns=1, timeout=POLL_S)
            for slot in busy:
                if slot.ref in done:
                    self._collect(slot, pending)
            self._append(final=False)
            if self.on_progress is not None and time.monotonic() - last_poll >= POLL_S:
                last_poll = time.monotonic()
                self.on_progress(self._progress(expected))

    def _collect(self, slot: _Slot, pending: deque[int]) -> None:
        i, ref = slot.unit, slot.ref
        slot.unit, slot.ref = None, None
        try:
            result = self.ray.get(ref)
            report = result["report"]
            report["outputs"] = [str(self.out_given / Path(o).relative_to(self.opts.out)) for o in report["outputs"]]
            self.results[i] = result
        except self.ray.exceptions.RayActorError:
            discard_partials(self.opts.out, self.stems[i])
            self.attempts[i] += 1
            name = self.units[i].name
            if self.attempts[i] > self.cluster.retries:
                report = SourceReport(name, self.units[i].kind, problems=[
                    f"{name}: its worker died {self.attempts[i]} times (killed, out of memory, or its node "
                    "was lost); skipped, run again with --resume"])
                self.results[i] = {"report": asdict(report), "totals": dict.fromkeys(STAGES, 0.0), "seconds": 0.0,
                                   "cpu_s": 0.0, "worker": slot.name, "pid": None}
            else:
                log.warning("worker %s died while segmenting %s; redoing it from its first frame", slot.name, name)
                pending.appendleft(i)
            self._replace(slot)
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, MslsegError):  # a full disk, say: the run cannot go on
                raise exc.cause from None
            raise

    def _progress(self, expected: dict[int, int | None]) -> ClusterProgress:
        refs = {s.name: s.actor.progress.remote() for s in self.slots if s.ref is not None}
        ready = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=POLL_S)[0] if refs else []
        busy = []
        for slot in self.slots:
            ref = refs.get(slot.name)
            if ref is None or ref not in ready:
                continue
            try:
                now = self.ray.get(ref)
            except self.ray.exceptions.RayError:
                continue
            if now is not None and now[0] == slot.unit:
                busy.append({"worker": slot.name, "pid": slot.info.get("pid"),
                             "source": self.units[slot.unit].name, "frames": now[1]})
        finished = [r for r in self.results if r is not None]
        counts = list(expected.values())
        return ClusterProgress(
            sources_done=len(finished) + sum(r is not None for r in self.resumed), sources_total=len(self.units),
            frames_done=sum(r["report"]["frames"] for r in finished) + sum(b["frames"] for b in busy),
            frames_total=None if any(c is None for c in counts) else sum(counts), busy=busy)

    # -- the areas table and the markers, in source order -----------------------------------------

    def _append(self, final: bool) -> None:
        """Append the parts of finished units to the table in source order (at the end: all there are)."""
        while self.next_append < len(self.units):
            i = self.next_append
            if self.resumed[i] is None and self.results[i] is None and not final:
                break  # rows go in source order: this one is still under way (or waiting)
            self.next_append += 1
            result = self.results[i]
            if result is None:
                continue
            part = part_path(self.opts.out, self.stems[i])
            if self.table is not None and part.is_file():
                append_part(self.table, self.units[i].name, part)
            part.unlink(missing_ok=True)
            if result["report"]["complete"]:
                self.unmarked.append(i)
        if final or not self.unmarked or time.monotonic() - self._snapshot_at < SNAPSHOT_EVERY_S:
            return
        self._snapshot_at = time.monotonic()
        if self.table is not None:
            self.table.snapshot()  # their rows reach the final table before their markers exist
        self._mark()

    def _mark(self) -> None:
        for i in self.unmarked:
            write_marker(marker_path(self.opts.out, self.stems[i]), SourceReport(**self.results[i]["report"]))
        self.unmarked = []
        parts = self.opts.out / PARTS_FOLDER
        if parts.is_dir() and not any(parts.iterdir()):
            parts.rmdir()

    def _abandon(self) -> None:
        """A failure or a second Ctrl-C: kill the workers; nothing of theirs stays under a final name."""
        for slot in self.slots:
            if slot.ref is not None:
                self.ray.kill(slot.actor)
                discard_partials(self.opts.out, self.stems[slot.unit])
        if self.table is not None:
            self.table.abort()

    def _summary(self, seconds: float) -> ClusterSummary:
        reports, extras = [], []
        totals = dict.fromkeys(STAGES, 0.0)
        for i in range(len(self.units)):
            if self.resumed[i] is not None:
                reports.append(self.resumed[i])
                extras.append({"worker": None, "seconds": None, "cpu_s": None, "fps": None, "attempts": 0})
                continue
            result = self.results[i]
            if result is None:
                continue
            report = SourceReport(**result["report"])
            reports.append(report)
            for k in STAGES:
                totals[k] += result["totals"][k]
            s = result["seconds"]
            extras.append({"worker": result["worker"], "seconds": round(s, 3), "cpu_s": round(result["cpu_s"], 3),
                           "fps": round(report.frames / s, 3) if s > 0 else 0.0, "attempts": self.attempts[i] + 1})
        frames = sum(r.frames for r in reports if not r.resumed)
        cluster = {"address": self.where, "workers": self.workers_seen, "cpus_per_worker": self.cluster.cpus_per_worker,
                   "gpus_per_worker": self.cluster.gpus_per_worker, "restarts": self.restarts}
        summary = ClusterSummary(self.out_given, getattr(self, "model_desc", self.model), frames, seconds,
                                 {k: round(v / max(frames, 1), 3) for k, v in totals.items()}, reports,
                                 interrupted=self.stop.is_set(), run_size=getattr(self, "run_size", ""),
                                 cluster=cluster, per_source=extras)
        atomic_write_text(self.opts.out / "summary.json", json.dumps(summary.to_dict(), indent=2))
        return summary



@dataclass(frozen=True)
class _Names:
    """What AreaTable reads of a ModelMeta (the driver holds no model)."""

    class_names: list[str]

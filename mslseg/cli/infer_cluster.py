"""`mslseg infer --cluster`: the run on Ray workers, its progress (one bar for the archive) and signals.

Kept out of infer.py so that the local path reads as before; nothing here imports Ray (the
runtime does, lazily, when a cluster run starts).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer

PLAIN_EVERY_S = 30.0  # outside a terminal: a progress line this often


def run_on_cluster(specs: list[str], model: Path, opts, cluster, *, segmenter_options: dict[str, Any],
                   frames, topic: str | None = None) -> tuple[Any, int, int]:
    """Run the archive on the cluster; returns (summary, the first stop signal or SIGINT, number of sources).
    `topic`: the image topic of the bags among `specs` (each bag and its topic is one unit)."""
    from mslseg.runtime.cluster import connect, run_cluster
    from mslseg.runtime.cluster.run import ray_target
    from mslseg.runtime.cluster.units import plan_units
    from mslseg.runtime.errors import require
    from mslseg.runtime.signals import stop_signals

    ray = require("ray", "cluster", "--cluster")  # before anything else: one line when it is not installed
    units = plan_units(specs, topic)
    if not ray.is_initialized():  # Ray takes seconds to start or reach: say so before the wait
        typer.echo(connecting_line(ray_target(cluster.address)), err=True)
    # entered before ray.init, so that its exit restores the handlers from before Ray's own
    with stop_signals() as flag:  # as a local run: the first stops cleanly, a second Ctrl-C aborts
        connection = connect(cluster.address, cluster.num_cpus)
        flag.reclaim()  # ray.init sets its own SIGTERM handler
        try:
            with ArchiveProgress(model.name) as progress:
                summary = run_cluster(units, model, opts, cluster, segmenter_options=segmenter_options,
                                      frames=frames, stop=flag.event, on_progress=progress.update,
                                      on_plan=progress.plan, connection=connection)
        finally:
            connection.close()
    return summary, flag.signum or signal.SIGINT, len(units)


def connecting_line(target: str | None) -> str:
    """What the wait for Ray is: a new local Ray (None, "local") or a connection to `target`."""
    if not target or target == "local":
        return "starting a local Ray (about 10 s)…"
    return f"connecting to {target}…"


class ArchiveProgress:
    """One bar for the archive (sources, frames, frames/s, ETA) in a terminal; plain lines elsewhere."""

    def __init__(self, name: str, *, terminal: bool | None = None, every_s: float = PLAIN_EVERY_S) -> None:
        self.name, self.every_s = name, every_s
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar: Any = None
        self._task: Any = None
        self._t0 = time.monotonic()
        self._last_line = self._t0

    def __enter__(self) -> ArchiveProgress:
        if self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn("{task.description}"), TextColumn("{task.fields[sources]}"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
            self._bar = Progress(*columns, console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task(self.name, total=None, sources="", rate="")
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def plan(self, line: str) -> None:
        typer.echo(line, err=True)
        self._t0 = time.monotonic()

    def update(self, p) -> None:  # p: ClusterProgress
        now = time.monotonic()
        rate = p.frames_done / max(now - self._t0, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, total=p.frames_total, completed=p.frames_done,
                             sources=f"{p.sources_done}/{p.sources_total} sources", rate=f"{rate:.1f} fps")
        elif now - self._last_line >= self.every_s:
            self._last_line = now
            typer.echo(self.line(p, rate), err=True)

    @staticmethod
    def line(p, rate: float) -> str:
        """`cluster 3/6 sources  120/240 frames  35.2 fps  ETA 0:00:04`."""
        frames = f"{p.frames_done}/{p.frames_total}" if p.frames_total is not None else f"{p.frames_done}"
        eta = ""
        if p.frames_total is not None and rate > 0:
            left = max(p.frames_total - p.frames_done, 0) / rate
            minutes, secs = divmod(int(round(left)), 60)
            eta = f"  ETA {minutes // 60}:{minutes % 60:02d}:{secs:02d}"
        return f"cluster {p.sources_done}/{p.sources_total} sources  {frames} frames  {rate:.1f} fps{eta}"

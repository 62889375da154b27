"""`mslseg infer --cluster`: the run on Ray workers, its progress (one bar for the archive) and signals.

Kept out of infer.py so that the local path reads as before; nothing here imports Ray (the
runtime does, lazily, when a cluster run starts).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

PLAIN_EVERY_S = 30.0  # outside a terminal: a progress line this often


def run_on_cluster(specs: list[str], model: Path, opts, cluster, *, segmenter_options: dict[str, Any],
                   frames) -> tuple[Any, int, int]:
    """Run the archive on the cluster; returns (summary, the first stop signal or SIGINT, number of sources)."""
    from mslseg.runtime.cluster import connect, run_cluster
    from mslseg.runtime.cluster.units import plan_units
    from mslseg.runtime.errors import require

    require("ray", "cluster", "--cluster")  # before anything else: one line when it is not installed
    units = plan_units(specs)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    in_main = threading.current_thread() is threading.main_thread()
    connection = connect(cluster.address, cluster.num_cpus)  # ray.init sets its own SIGTERM handler
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, frame):  # as a local run: the first stops cleanly, a second Ctrl-C aborts
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    try:
        if in_main:
            for s in handlers:
                signal.signal(s, on_signal)
        with ArchiveProgress(model.name) as progress:
            summary = run_cluster(units, model, opts, cluster, segmenter_options=segmenter_options, frames=frames,
                                  stop=stop, on_progress=progress.update, on_plan=progress.plan,
                                  connection=connection)
    finally:
        connection.close()
        if in_main:
            for s, handler in handlers.items():
                signal.signal(s, handler)
    return summary, received[0] if received else signal.SIGINT, len(units)


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

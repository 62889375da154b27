"""What `mslseg train` and `mslseg adapt` show while they run, fed by the loop's on_start and on_step.

In a terminal (stderr is one): a rich progress bar with images/s, ETA and losses. Elsewhere (a log
file, `nohup`, CI, `2>&1 | tee`): a plain line every `log_every` iterations or `interval_s`
seconds, whichever comes first, so a log shows the run is alive.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # torch stays unimported until the command needs it
    from mslseg.runtime.infer_job import SourceReport
    from mslseg.training.run_log import RunStart
    from mslseg.training.step import StepStats


class RunProgress:
    """The start line, then a progress bar (terminal) or plain progress lines (anything else)."""

    def __init__(self, command: str, *, enabled: bool = True, log_every: int = 10, interval_s: float = 30.0,
                 terminal: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.command, self.enabled, self.log_every, self.interval_s = command, enabled, log_every, interval_s
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.clock = clock
        self.info: RunStart | None = None
        self._bar: Any = None
        self._task: Any = None

    def on_start(self, info: RunStart) -> None:
        """Prints the start line (a `RunStart`) and starts the bar or the line clock."""
        self.info = info
        if not self.enabled:
            return
        typer.echo(f"{self.command}: {info.describe()}")
        now = self.clock()
        self._t0, self._first = now, info.start  # for the ETA: the pace of this invocation
        self._last_t, self._last_it = now, info.start  # for images/s: since the previous line
        if self.terminal:
            self._start_bar(info)

    def on_step(self, stats: StepStats) -> None:
        if not self.enabled or self.info is None:
            return
        now, it = self.clock(), stats.iteration
        if self._bar is not None:
            self._bar.update(self._task, completed=it, rate=f"{self._rate(now, it):.1f} img/s",
                             loss=self._losses(stats))
            self._last_t, self._last_it = now, it
        elif it % self.log_every == 0 or now - self._last_t >= self.interval_s or it == self.info.stop:
            typer.echo(self.line(stats, now), err=True)
            self._last_t, self._last_it = now, it

    def line(self, stats: StepStats, now: float) -> str:
        """`adapt 300/600  src 0.412  tgt -0.0123  12.3 img/s  ETA 0:04:12`."""
        info, it = self.info, stats.iteration
        width = len(str(info.iterations))
        eta = (info.stop - it) * (now - self._t0) / max(it - self._first, 1)
        return (f"{self.command} {it:>{width}}/{info.iterations}  {self._losses(stats)}  "
                f"{self._rate(now, it):.1f} img/s  ETA {_clock_time(eta)}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _rate(self, now: float, it: int) -> float:
        return (it - self._last_it) * self.info.images_per_step / max(now - self._last_t, 1e-9)

    def _losses(self, stats: StepStats) -> str:
        info = self.info
        parts = [f"src {stats.loss_source:.3f}"]
        if info.multi_level:
            parts.append(f"aux {stats.loss_source_aux:.3f}")
        if stats.loss_fd is not None:
            parts.append(f"fd {stats.loss_fd:.4f}")
        if info.target_images is not None and info.loss != "none":
            parts.append(f"tgt {stats.loss_target:.4f}")
        if info.target_images is not None and info.multi_level and (info.loss != "none" or not info.self_training):
            parts.append(f"guide {stats.loss_guidance:.4f}")
        if stats.loss_pseudo is not None:
            parts.append(f"pseudo {stats.loss_pseudo:.3f}")
            if stats.loss_mic:
                parts.append(f"mic {stats.loss_mic:.3f}")
            parts.append(f"conf {stats.confident:.2f}")
        return "  ".join(parts)

    def _start_bar(self, info: RunStart) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"))
        self._bar = Progress(*columns, console=Console(stderr=True), transient=False)
        self._task = self._bar.add_task(self.command, total=info.iterations, completed=info.start,
                                        rate="", loss="")
        self._bar.start()


class SourceBar:
    """`run_infer`'s on_frame: advances a rich progress task by a frame and labels it with the source
    being processed ("clip.mp4 2/3"), not with the model, which is the same for every frame."""

    def __init__(self, progress: Any, task: Any, names: list[str]):
        self.progress, self.task, self.names = progress, task, names
        self._current: str | None = None
        if names:
            self._label(names[0])

    def __call__(self, report: SourceReport) -> None:
        if report.name != self._current:
            self._label(report.name)
        self.progress.advance(self.task)

    def _label(self, name: str) -> None:
        self._current = name
        # its place in the list, not a count of those seen: sources done before a --resume send no frames
        at = self.names.index(name) + 1 if name in self.names else None
        count = f" {at}/{len(self.names)}" if at and len(self.names) > 1 else ""
        self.progress.update(self.task, description=f"{name}{count}")


@contextlib.contextmanager
def run_progress(command: str, *, enabled: bool = True, log_every: int = 10,
                 interval_s: float = 30.0) -> Iterator[RunProgress]:
    progress = RunProgress(command, enabled=enabled, log_every=log_every, interval_s=interval_s)
    try:
        yield progress
    finally:
        progress.close()


def _clock_time(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"

"""A rich progress bar with iteration rate and ETA, fed by the training loop's on_step."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def step_progress(total: int, description: str = "", enabled: bool = True) -> Iterator[Callable[[Any], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"))
    with Progress(*columns, console=console, disable=not (enabled and sys.stderr.isatty()), transient=False) as bar:
        task = bar.add_task(description, total=total, rate="", loss="")

        def on_step(stats: Any) -> None:
            bar.update(task, completed=stats.iteration,
                       loss=f"src {stats.loss_source:.3f} tgt {stats.loss_target:.4f}")

        yield on_step

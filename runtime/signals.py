"""The stop-signal policy, one owner for training, `mslseg infer`, the cluster driver and `run_infer`.

SIGINT (Ctrl-C) and SIGTERM (what Slurm, Kubernetes and `docker stop` send) ask a run to stop at
its next safe point: the step, batch or unit under way finishes and its outputs are saved, so the
run can be resumed. The first signal is recorded and sets `StopFlag.event`; a second Ctrl-C raises
KeyboardInterrupt at once (the user does not want to wait; every write is atomic, so what was saved
stays whole); a repeated SIGTERM is ignored (schedulers escalate with SIGKILL after their grace
period, and a signal can arrive twice: Slurm signals every process, torchrun forwards it too).

A process that a signal stopped exits with 128 + the signal's number (130 for Ctrl-C, 143 for
SIGTERM), as a shell reports a process the signal killed, so a scheduler sees a preemption.
Torch-free: the runtime's `run_infer` uses it as much as the training loop does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; what Slurm, Kubernetes and `docker stop` send

# Python's own handlers: only these are replaced (an embedding application's own handler is left alone)
_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


def exit_code(signum: int) -> int:
    """The exit code of a process that `signum` stopped: 128 + signum (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + int(signum)


def stopped_by(signum: int) -> str:
    """The words for a stop: "interrupted" for Ctrl-C, "stopped by SIGTERM" for the others."""
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


class StopFlag:
    """The handler `stop_signals` installs: the first signal is kept in `signum` and sets `event`.

    A subclass decides what else the first signal does (`first`): the training loop raises at once
    where no step is under way.
    """

    def __init__(self, event: threading.Event | None = None) -> None:
        self.signum: int | None = None
        self.event = event if event is not None else threading.Event()
        self.installed: dict[int, Any] = {}  # signal -> the handler it had before (what exit restores)

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            self.event.set()
            self.first(signum)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            log.warning("%s again: already stopping at the next safe point", signal.Signals(signum).name)

    def first(self, signum: int) -> None:
        """What the first signal does besides setting the flag (nothing: the run polls `event`)."""

    def reclaim(self) -> None:
        """Installs the handler again for the signals it holds: after a library (ray.init sets its own
        SIGTERM handler) replaced it inside the block. Exit still restores the handlers from before."""
        for signum in self.installed:
            signal.signal(signum, self.handle)

    def raise_default(self) -> None:
        """After the block, outside the handlers: the stop's own effect, delayed to a safe point.

        Ctrl-C raises KeyboardInterrupt (Python's default); another signal ends the process with
        `exit_code` (SystemExit, so the caller's `finally` blocks still run). Nothing without a signal.
        """
        if self.signum is None:
            return
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(exit_code(self.signum))


@contextlib.contextmanager
def stop_signals(flag: StopFlag | None = None) -> Iterator[StopFlag]:
    """Handles SIGINT and SIGTERM with `flag` (a new `StopFlag` by default) for the block, then
    restores the handlers they had.

    Only in the main thread (Python delivers signals there), and only for a signal whose handler is
    Python's default: an embedding application's own handler, or a signal the process was started
    with ignored (`nohup`, `cmd &`), is left alone, and that signal behaves as it did.
    """
    flag = flag if flag is not None else StopFlag()
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is _DEFAULTS[signum]:
                flag.installed[signum] = signal.signal(signum, flag.handle)
    try:
        yield flag
    finally:
        for signum, previous in flag.installed.items():
            signal.signal(signum, previous)
        flag.installed = {}

"""Live sources (a camera, an RTSP/HTTP stream): a stall timeout and reconnects with backoff.

A live source can stop delivering frames without ending: a camera loses power, a network drops,
and a read blocks inside OpenCV for as long as its backend likes (FFmpeg waits 30 s by default,
other backends have their own ideas or none). So frames are read in a thread, one per
connection, into a small queue, and the consumer waits on the queue with the stall timeout: a hung
read cannot hang the run. A connection given up on is abandoned, not released from this thread
(releasing a capture while another thread reads it is undefined): its thread releases it when its
read returns, which FFmpeg's own timeouts (set to the stall timeout) bound for streams. Python
exits only after such threads are done (up to the stall timeout + 1 s): a thread that comes back
from OpenCV while the interpreter finalises aborts the process ("terminate called ...").

When a source stops (no frame for `stall_timeout` s, or the connection ended), `LiveReader`
reopens it up to `reconnect` times, waiting 1, 2, 4, 8, 8, ... s (times `backoff`) before each
attempt and logging one line per attempt; frame numbers continue across connections. When every
attempt failed, the frames end and `stopped` says what happened; the caller closes its outputs as
after any end.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mslseg.runtime.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_STALL_TIMEOUT_S = 10.0  # a camera at >= 1 FPS or a stream's keyframe interval fit well inside
BACKOFF_CAP_S = 8.0
_POLL_S = 0.05  # how often waits look at the stop event
_LINGERING: list[tuple[float, _Connection]] = []  # (deadline, connection) given up on, thread still reading


@dataclass(frozen=True)
class LivePolicy:
    """How a live source's outages are handled. Files and images never time out."""

    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S  # seconds without a frame before a source counts as stopped
    reconnect: int = 0  # reopen attempts per outage; 0: end at the first outage
    backoff: float = 1.0  # seconds before the first attempt, doubled per attempt (capped at 8 s)

    def __post_init__(self) -> None:
        if not self.stall_timeout > 0:
            raise InputError(f"the stall timeout must be > 0 seconds, got {self.stall_timeout}")
        if self.reconnect < 0:
            raise InputError(f"reconnect must be >= 0 attempts, got {self.reconnect}")
        if self.backoff < 0:
            raise InputError(f"the reconnect backoff must be >= 0 seconds, got {self.backoff}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt `attempt` (1-based)."""
        return min(self.backoff * 2 ** (attempt - 1), max(BACKOFF_CAP_S, self.backoff))

    def ffmpeg_params(self) -> list[int]:
        """VideoCapture parameters bounding FFmpeg's own waits (open, read) by the stall timeout, so a
        reader given up on ends about when the consumer gives up on it."""
        import cv2

        ms = max(int(self.stall_timeout * 1000), 1)
        return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]


@dataclass(frozen=True)
class _Ended:
    reason: str


_TIMEOUT = object()
_STOPPED = object()


class _Connection:
    """One capture read by a daemon thread into a small queue of (index, image or None) items."""

    def __init__(self, open_capture: Callable[[], Any], first_index: int, wanted: Callable[[int], bool],
                 ended: str, name: str, stall_timeout: float) -> None:
        self._items: queue.Queue = queue.Queue(maxsize=2)
        self._cancel = threading.Event()
        self._held: list[object] = []
        self._thread = threading.Thread(
            target=self._run, args=(open_capture, first_index, wanted, ended, stall_timeout),
            name=f"mslseg-live-{name}", daemon=True)
        self._thread.start()

    def _run(self, open_capture: Callable[[], Any], index: int, wanted: Callable[[int], bool],
             ended: str, stall_timeout: float) -> None:
        cap, outcome = None, None
        try:
            cap = open_capture()
            while not self._cancel.is_set():
                t0 = time.monotonic()
                if wanted(index):
                    ok, image = cap.read()
                else:  # skipped by stride or range: grabbed, never converted
                    ok, image = cap.grab(), None
                if not ok or (image is None and wanted(index)):  # FFmpeg's read timeout, or the end
                    waited = time.monotonic() - t0 >= 0.9 * stall_timeout
                    outcome = _Ended(f"no frame for {stall_timeout:g} s" if waited else ended)
                    break
                if not self._put((index, image)):
                    break
                index += 1
        except Exception as exc:  # noqa: BLE001 - any failure of this connection is an outage, said in words
            outcome = _Ended(str(exc) or type(exc).__name__)
        finally:
            if cap is not None:  # before the outcome is told: a reconnect never overlaps this capture
                cap.release()
        if outcome is not None:
            self._put(outcome)

    def _put(self, item: object) -> bool:
        while not self._cancel.is_set():
            try:
                self._items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def next(self, timeout: float, stop: threading.Event) -> object:
        """The next item, `_TIMEOUT` after `timeout` s without one, `_STOPPED` once `stop` is set."""
        if self._held:
            return self._held.pop()
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            try:
                return self._items.get(timeout=min(_POLL_S, max(deadline - time.monotonic(), 0.0)))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return _TIMEOUT
        return _STOPPED

    def hold(self, item: object) -> None:
        self._held.append(item)

    def cancel(self) -> None:
        """Stop reading; the thread releases its capture (now, or when a hung read returns)."""
        self._cancel.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


class LiveReader:
    """Frames of a live source across outages and reconnects; `stopped` says why they ended early."""

    def __init__(self, name: str, kind: str, policy: LivePolicy, reopen: Callable[[], Any]) -> None:
        self.name, self.kind, self.policy = name, kind, policy
        self._reopen = reopen
        self.stop = threading.Event()  # the current iteration's: its waits end when it is set
        self._ended = "the camera stopped returning frames" if kind == "camera" else "the stream ended"
        self._connection: _Connection | None = None
        self._abandoned: list[_Connection] = []  # cancelled, their thread maybe inside a hung read
        self.reconnects = 0  # successful reconnects
        self.stopped: str | None = None  # what ended the frames early, after any reconnects

    def frames(self, cap: Any, first: np.ndarray, wanted: Callable[[int], bool], end: int | None,
               stop: threading.Event) -> Generator[tuple[int, np.ndarray], None, None]:
        """(index, image) of the wanted frames, from an open capture whose frame 0 is `first`;
        waits (a stall, a backoff) end early, and the frames too, once `stop` is set."""
        self.stop = stop
        if wanted(0):
            yield 0, first
        if end is not None and end <= 1:
            return
        self._connection = self._connect(lambda: cap, 1, wanted)
        next_index = 1
        try:
            while True:
                item = self._connection.next(self.policy.stall_timeout, self.stop)
                if item is _STOPPED:
                    return
                if isinstance(item, tuple):
                    index, image = item
                    next_index = index + 1
                    if image is not None:
                        yield index, image
                    if end is not None and next_index >= end:
                        return
                    continue
                why = (f"no frame for {self.policy.stall_timeout:g} s" if item is _TIMEOUT
                       else item.reason)
                self._abandon(self._connection)
                self._connection = self._reconnect(next_index, wanted, why)
                if self._connection is None:
                    return
        finally:
            self.close()

    def _reconnect(self, index: int, wanted: Callable[[int], bool], why: str) -> _Connection | None:
        """A new connection delivering frames from `index`, or None (and `stopped` set)."""
        attempts, failure = self.policy.reconnect, why
        for attempt in range(1, attempts + 1):
            delay = self.policy.delay(attempt)
            if attempt == 1:
                log.warning("%s %s stopped at frame %d (%s); reconnect 1 of %d in %g s", self.kind, self.name,
                            index, why, attempts, delay)
            else:
                log.warning("%s %s: reconnect %d failed (%s); reconnect %d of %d in %g s", self.kind,
                            self.name, attempt - 1, failure, attempt, attempts, delay)
            if self.stop.wait(delay):
                return None
            connection = self._connect(self._reopen, index, wanted)
            item = connection.next(self.policy.stall_timeout, self.stop)
            if item is _STOPPED:
                self._abandon(connection)
                return None
            if isinstance(item, tuple):
                connection.hold(item)
                self.reconnects += 1
                log.warning("%s %s: reconnected; frames continue at %d", self.kind, self.name, index)
                return connection
            self._abandon(connection)
            failure = (f"no frame for {self.policy.stall_timeout:g} s after reopening" if item is _TIMEOUT
                       else item.reason)
        tail = (f"reconnect failed {attempts} time{'s' if attempts > 1 else ''} (last: {failure})"
                if attempts else "no reconnect attempts were asked for")
        self.stopped = f"{self.kind} {self.name} stopped delivering frames at frame {index} ({why}); {tail}"
        log.info("%s", self.stopped)
        return None

    def _connect(self, open_capture: Callable[[], Any], index: int, wanted: Callable[[int], bool]) -> _Connection:
        return _Connection(open_capture, index, wanted, self._ended, self.name, self.policy.stall_timeout)

    def _abandon(self, connection: _Connection) -> None:
        connection.cancel()
        self._abandoned.append(connection)

    def close(self) -> None:
        """Stop reading; a reader still inside a hung read is waited for at exit, not here."""
        if self._connection is not None:
            self._abandon(self._connection)
            self._connection = None
        deadline = time.monotonic() + self.policy.stall_timeout + 1.0
        for connection in self._abandoned:
            if not connection.join(0.2):
                log.info("%s %s: a read is still blocked inside OpenCV; Python will wait for it at exit "
                         "(at most %g s)", self.kind, self.name, self.policy.stall_timeout + 1.0)
                if not _LINGERING:
                    atexit.register(_join_lingering)
                _LINGERING.append((deadline, connection))
        self._abandoned = []

    def report(self) -> dict[str, Any]:
        """What summary.json records of a live source."""
        return {"stall_timeout_s": self.policy.stall_timeout, "reconnect": self.policy.reconnect,
                "reconnects": self.reconnects, "stopped": self.stopped}


def _join_lingering() -> None:
    """At exit: wait for readers given up on while their read hung (bounded; Ctrl-C skips it)."""
    if not any(c.join(0.0) is False for _, c in _LINGERING):
        return
    wait = max(deadline for deadline, _ in _LINGERING) - time.monotonic()
    log.warning("waiting up to %.0f s for a stalled stream's read to time out inside OpenCV "
                "(Ctrl-C to quit at once)", max(wait, 0.0))
    try:
        while _LINGERING:
            deadline, connection = _LINGERING.pop()
            connection.join(max(deadline - time.monotonic(), 0.0))
    except KeyboardInterrupt:
        pass

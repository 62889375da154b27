"""`segment_stream`: decode, inference and the caller's encode overlapped, with flat memory.

    for item in segment_stream(source, segmenter):
        writer.write(overlay(item.frame.image, item.result.labels, lut))

Three threads: a reader pulls frames from the iterable (decoding happens there) and packs
batches; an inference thread runs the segmenter; the caller's thread gets the results and does
its own work (encoding, display) while the next batch decodes and runs. Two bounded queues of
`queue_size` batches sit between them, so memory does not grow with the length of the video.

Stopping: set `stop` (the CLI does so on Ctrl-C) and the reader stops reading, the batch being
inferred is finished and yielded, and the generator ends normally, so the caller closes its
files as usual. Closing the generator early (break) also stops and joins both threads.

ONNX Runtime's intra-op threads and these threads share the cores: on a small CPU give the
Segmenter `threads=cores - 1` so that decoding and encoding keep a core.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from mslseg.runtime.errors import InputError
from mslseg.runtime.io.sources import Frame
from mslseg.runtime.segmenter import Segmentation, Segmenter

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


@dataclass(frozen=True)
class StreamResult:
    frame: Frame
    result: Segmentation
    decode_ms: float  # time the reader spent producing this frame (decoding, for a video)


def _put(q: queue.Queue, item: object, halt: threading.Event) -> bool:
    while not halt.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, halt: threading.Event) -> object:
    while True:
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            if halt.is_set():
                return _END


def segment_stream(frames: Iterable[Frame | np.ndarray], segmenter: Segmenter, *,
                   batch_size: int | None = None, rgb: bool = False, queue_size: int = 4,
                   stop: threading.Event | None = None, drop_late: bool = False) -> Iterator[StreamResult]:
    """Yield a StreamResult per frame, in order, while the next frames decode and run.

    frames: Frame objects (from `open_sources`) or plain HxWx3 uint8 arrays.
    batch_size: frames per model run (default: the segmenter's).
    drop_late: for live cameras: when inference falls behind, drop the oldest waiting batch
        instead of blocking the reader, so results stay current.
    """
    if queue_size < 1:
        raise InputError(f"queue_size must be >= 1, got {queue_size}")
    batch = batch_size or segmenter.batch_size
    stop = stop or threading.Event()
    halt = threading.Event()  # internal: the consumer has gone, or a thread failed
    inbox: queue.Queue = queue.Queue(maxsize=queue_size)
    outbox: queue.Queue = queue.Queue(maxsize=queue_size)

    def read() -> None:
        try:
            pending: list[tuple[Frame, float]] = []
            it, index = iter(frames), 0
            while not stop.is_set() and not halt.is_set():
                t0 = time.perf_counter()
                item = next(it, _END)
                if item is _END:
                    break
                frame = item if isinstance(item, Frame) else Frame(item, index, None)
                index += 1
                pending.append((frame, (time.perf_counter() - t0) * 1e3))
                if len(pending) == batch:
                    if drop_late and inbox.full():
                        try:
                            inbox.get_nowait()
                        except queue.Empty:
                            pass
                    if not _put(inbox, pending, halt):
                        return
                    pending = []
            if pending and not stop.is_set():
                _put(inbox, pending, halt)
            _put(inbox, _END, halt)
        except BaseException as exc:  # handed to the consumer, raised there
            _put(inbox, _Failed(exc), halt)

    def infer() -> None:
        try:
            while True:
                item = _get(inbox, halt)
                if item is _END or isinstance(item, _Failed) or stop.is_set():
                    _put(outbox, _END if stop.is_set() else item, halt)
                    return
                results = segmenter.segment([f.image for f, _ in item], rgb=rgb)
                out = [StreamResult(f, r, ms) for (f, ms), r in zip(item, results, strict=True)]
                if not _put(outbox, out, halt):
                    return
        except BaseException as exc:
            _put(outbox, _Failed(exc), halt)

    threads = [threading.Thread(target=read, name="mslseg-read", daemon=True),
               threading.Thread(target=infer, name="mslseg-infer", daemon=True)]
    for t in threads:
        t.start()
    try:
        while True:
            item = _get(outbox, halt)
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield from item
    finally:
        halt.set()
        for t in threads:
            t.join()

"""Live sources against a local MJPEG-over-HTTP server: stall timeout, reconnects, stop, files exempt."""

from __future__ import annotations

import threading
import time

import pytest

from mslseg.runtime.errors import DataError, InputError
from mslseg.runtime.io.live import LivePolicy
from mslseg.runtime.io.sources import FrameRange, open_sources
from tests.runtime import models
from tests.runtime.mjpeg_server import SESSION_GREYS, MjpegServer


def _read(source):
    """(index, session) of every frame, and the seconds from the last frame to the end."""
    got, last = [], time.monotonic()
    for frame in source:
        grey = int(frame.image[2, 2, 1])  # a corner the moving bar never covers
        got.append((frame.index, min(range(len(SESSION_GREYS)), key=lambda s: abs(SESSION_GREYS[s] - grey))))
        last = time.monotonic()
    return got, time.monotonic() - last


def test_policy_backoff_and_checks():
    assert [LivePolicy().delay(k) for k in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    assert LivePolicy().stall_timeout == 10.0 and LivePolicy().reconnect == 0
    for bad in ({"stall_timeout": 0}, {"reconnect": -1}, {"backoff": -1}):
        with pytest.raises(InputError):
            LivePolicy(**bad)


def test_a_stalled_stream_ends_after_the_timeout():
    """The server keeps the connection open and sends nothing more: a hung camera, never back."""
    with MjpegServer() as server:
        server.stall_after(10)
        (source,) = open_sources(server.url, live=LivePolicy(stall_timeout=1.0))
        got, waited = _read(source)
        source.close()
    assert [i for i, _ in got] == list(range(10))
    assert 0.8 < waited < 2.5
    assert source.stopped == (f"stream {server.url} stopped delivering frames at frame 10 (no frame for 1 s); "
                              "no reconnect attempts were asked for")
    assert source.live_report() == {"stall_timeout_s": 1.0, "reconnect": 0, "reconnects": 0,
                                    "stopped": source.stopped}


@pytest.mark.slow
def test_a_restarted_stream_continues_where_it_stopped(caplog):
    """The server goes away after 10 frames and is back 1 s later: frames continue, numbered on."""
    with MjpegServer() as server:
        server.drop_after(10, down_s=1.0)
        (source,) = open_sources(server.url, FrameRange(end="30"),
                                 live=LivePolicy(stall_timeout=1.0, reconnect=3, backoff=0.3))
        got, _ = _read(source)
        source.close()
    assert [i for i, _ in got] == list(range(30))  # nothing lost or repeated on this side
    assert {s for i, s in got if i < 10} == {0} and {s for i, s in got if i >= 10} == {1}
    assert source.stopped is None and source.live_report()["reconnects"] == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "mslseg.runtime.io.live"]
    assert lines[0] == f"stream {server.url} stopped at frame 10 (the stream ended); reconnect 1 of 3 in 0.3 s"
    assert lines[-1] == f"stream {server.url}: reconnected; frames continue at 10"


def test_reconnects_that_all_fail_end_the_frames():
    with MjpegServer() as server:
        server.drop_after(8, down_s=None)
        (source,) = open_sources(server.url, live=LivePolicy(stall_timeout=1.0, reconnect=2, backoff=0.2))
        got, waited = _read(source)
        source.close()
    assert [i for i, _ in got] == list(range(8))
    assert waited < 0.2 + 0.4 + 2 * 1.0 + 1.5  # backoffs, and at most a timeout per attempt
    assert source.stopped.startswith(f"stream {server.url} stopped delivering frames at frame 8 (the stream ended); "
                                     "reconnect failed 2 times (last: ")


def test_stop_ends_the_wait_for_a_stalled_stream():
    """Ctrl-C during an outage: the long timeout is not waited out, and nothing counts as stopped."""
    with MjpegServer() as server:
        server.stall_after(5)
        (source,) = open_sources(server.url, live=LivePolicy(stall_timeout=5.0, reconnect=5))
        threading.Timer(1.0, source.stop.set).start()
        t0 = time.monotonic()
        got, _ = _read(source)
        source.close()
    assert len(got) == 5 and time.monotonic() - t0 < 4.0
    assert source.stopped is None


def test_files_never_time_out(tmp_path):
    video = models.write_video(tmp_path / "clip.mp4", n=6)
    (source,) = open_sources(str(video), live=LivePolicy(stall_timeout=1e-6))
    assert not source.live and source.live_report() is None
    assert len(list(source)) == 6


def test_a_stream_that_never_sends_a_frame_is_refused_within_the_timeout():
    with MjpegServer() as server:
        server.stall_after(0)
        t0 = time.monotonic()
        with pytest.raises(DataError, match=f"stream {server.url}"):
            open_sources(server.url, live=LivePolicy(stall_timeout=1.0))
    assert time.monotonic() - t0 < 3.0

"""segment_stream on a real mp4: same labels as direct calls, in order; stop and break are clean."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mslseg.runtime import Segmenter, segment_stream
from mslseg.runtime.errors import DataError
from mslseg.runtime.io.sources import open_sources
from tests.runtime import models


@pytest.fixture(scope="module")
def seg():
    with Segmenter(models.onnx_model("uint8_labels"), device="cpu", batch_size=4, threads=1) as s:
        yield s


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return models.write_video(tmp_path_factory.mktemp("v") / "clip.mp4", n=22)


def _threads():
    return {t.name for t in threading.enumerate() if t.name.startswith("mslseg-")}


def test_stream_equals_direct_calls(seg, video):
    (src,) = open_sources(str(video))
    items = list(segment_stream(src, seg, queue_size=2))
    assert [i.frame.index for i in items] == list(range(22))  # 5 full batches and a partial one
    (again,) = open_sources(str(video))
    direct = seg([f.image for f in again])
    for item, res in zip(items, direct, strict=True):
        assert np.array_equal(item.result.labels, res.labels)
        assert item.decode_ms >= 0 and item.result.timings.batch in (2, 4)
    assert not _threads()


def test_plain_arrays_and_a_batch_size(seg):
    items = list(segment_stream(models.frames(5), seg, batch_size=2))
    assert [i.frame.index for i in items] == [0, 1, 2, 3, 4]
    assert [i.result.timings.batch for i in items] == [2, 2, 2, 2, 1]


def test_stop_finishes_the_current_batch(seg, video):
    stop = threading.Event()
    (src,) = open_sources(str(video))
    got = []
    for item in segment_stream(src, seg, stop=stop, queue_size=1):
        got.append(item.frame.index)
        stop.set()
    assert 4 <= len(got) < 22 and got == list(range(len(got)))
    assert not _threads()


def test_break_joins_the_threads(seg, video):
    (src,) = open_sources(str(video))
    for _ in segment_stream(src, seg):
        break
    assert not _threads()


def test_reader_errors_reach_the_caller(seg):
    def frames():
        yield models.frames(1)[0]
        raise DataError("camera unplugged")

    with pytest.raises(DataError, match="camera unplugged"):
        list(segment_stream(frames(), seg, batch_size=1))
    assert not _threads()

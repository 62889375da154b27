"""Whatever it is handed, the Segmenter segments or raises InputError, never anything else.

Random shapes (0..4 dimensions, empty and one-pixel sides, channels 1/3/4, channels-first),
dtypes (every numpy kind, both byte orders), values (NaN, inf, out of range), memory layouts
(negative strides, transposed views) and containers, on three kinds of model: uint8 frames in
and labels out; float input run at a fixed `size` with a confidence output; a static-shape
graph with a fixed batch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mslseg.runtime import Segmenter
from mslseg.runtime.errors import InputError
from tests.runtime import models

DTYPES = st.sampled_from([np.uint8, np.float32, np.float64, np.int16, np.int64, np.bool_, np.float16,
                          np.uint16, np.int8, np.complex64, np.dtype(">f4"), np.dtype(">u2")])
SHAPES = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([3, 3, 3, 1, 4])),
    st.tuples(st.integers(0, 2), st.integers(1, 8), st.integers(1, 8), st.sampled_from([3, 4])),
    st.tuples(st.integers(0, 8), st.integers(0, 8)),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just(3), st.integers(1, 8), st.integers(1, 8)),  # channels-first
    st.tuples(),  # a 0-d array
)
LAYOUTS = st.sampled_from(["plain", "flipped", "transposed"])


def _layout(array: np.ndarray, how: str) -> np.ndarray:
    if how == "flipped" and array.ndim >= 2:
        return array[::-1, ::-1]  # negative strides
    if how == "transposed" and array.ndim == 3:
        return np.ascontiguousarray(array.transpose(1, 0, 2)).transpose(1, 0, 2)  # not C-contiguous
    return array


FRAME = st.one_of(
    st.builds(_layout, DTYPES.flatmap(lambda dt: SHAPES.flatmap(lambda shape: arrays(dt, shape))), LAYOUTS),
    st.none(), st.integers(), st.text(max_size=3), st.lists(st.integers(0, 255), max_size=3),
)
# frames the contract accepts (uint8, or float in pixel units), of random sizes, often mixed in a batch
GOOD = st.builds(_layout, st.one_of(
    st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
        lambda hw: arrays(np.uint8, (*hw, 3))),
    st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([np.float32, np.float64])).flatmap(
        lambda s: arrays(s[2], (s[0], s[1], 3), elements=st.floats(0, 255, width=32))),
), LAYOUTS)
INPUT = st.one_of(GOOD, st.lists(GOOD, min_size=1, max_size=4), st.lists(st.one_of(GOOD, FRAME), max_size=3),
                  FRAME, st.lists(FRAME, max_size=3), st.tuples(FRAME, FRAME))

CASES = {  # model variant -> Segmenter options
    "uint8_labels": {"batch_size": 2},
    "float_probs_conf": {"size": "24x16", "confidence": True},
    "static_float_logits": {},
}


@pytest.fixture(scope="module", params=list(CASES))
def seg(request):
    path = models.onnx_model(request.param)
    with Segmenter(path, device="cpu", threads=1, warmup=False, **CASES[request.param]) as s:
        yield s


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=INPUT, rgb=st.booleans())
def test_segments_or_raises_input_error(seg, frames, rgb):
    try:
        out = seg(frames, rgb=rgb)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        event("InputError")
        return
    event("segmented")
    results = [out] if not isinstance(out, list) else out
    sources = [frames] if isinstance(frames, np.ndarray) and frames.ndim == 3 else list(frames)
    assert len(results) == len(sources)
    for res, src in zip(results, sources, strict=True):
        assert res.labels.shape == src.shape[:2] and res.labels.dtype == np.uint8
        assert res.labels.max() < models.NUM_CLASSES
        if seg.meta.confidence:
            assert res.confidence.shape == src.shape[:2] and np.isfinite(res.confidence).all()

"""Whatever it is handed, the Segmenter segments or raises InputError, never anything else."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mslseg.runtime import Segmenter
from mslseg.runtime.errors import InputError
from tests.runtime import models

DTYPES = st.sampled_from([np.uint8, np.float32, np.float64, np.int16, np.int64, np.bool_, np.float16])
SHAPES = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([3, 3, 3, 1, 4])),
    st.tuples(st.integers(0, 2), st.integers(1, 8), st.integers(1, 8), st.sampled_from([3, 4])),
    st.tuples(st.integers(0, 8), st.integers(0, 8)),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
)
FRAME = st.one_of(
    DTYPES.flatmap(lambda dt: SHAPES.flatmap(lambda shape: arrays(dt, shape))),
    st.none(), st.integers(), st.text(max_size=3),
)
INPUT = st.one_of(FRAME, st.lists(FRAME, max_size=3))


@pytest.fixture(scope="module")
def seg():
    path = models.onnx_model("uint8_labels")
    with Segmenter(path, device="cpu", batch_size=2, threads=1, warmup=False) as s:
        yield s


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=INPUT)
def test_segments_or_raises_input_error(seg, frames):
    try:
        out = seg(frames)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    results = [out] if not isinstance(out, list) else out
    sources = [frames] if isinstance(frames, np.ndarray) and frames.ndim == 3 else list(frames)
    assert len(results) == len(sources)
    for res, src in zip(results, sources, strict=True):
        assert res.labels.shape == src.shape[:2] and res.labels.dtype == np.uint8

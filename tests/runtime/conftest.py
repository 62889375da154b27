"""Fixtures of the runtime tests: tiny models in every export variant, small frames and videos."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime import models


@pytest.fixture(scope="session")
def checkpoint_path():
    return models.checkpoint()


@pytest.fixture(scope="session", params=list(models.VARIANTS))
def variant_path(request):
    """Each ONNX export variant in turn."""
    return models.onnx_model(request.param)


@pytest.fixture(scope="session")
def reference_labels(checkpoint_path):
    """Labels of models.frames() by the .pt model through torch: what every variant must give."""
    from mslseg.runtime import Segmenter

    with Segmenter(checkpoint_path, device="cpu", warmup=False) as seg:
        return np.stack([r.labels for r in seg(models.frames())])

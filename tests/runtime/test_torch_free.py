"""`import mslseg.runtime` and running an .onnx never import torch (DESIGN.md's promise)."""

from __future__ import annotations

import subprocess
import sys

from tests.runtime import models


def test_runtime_runs_onnx_without_torch():
    code = f"""
import sys
import numpy as np
import mslseg.runtime
from mslseg.runtime import Segmenter, segment_stream, overlay
from mslseg.runtime.viz import palette_lut
with Segmenter({str(models.onnx_model("float_logits"))!r}, device="cpu", threads=1) as seg:
    res = seg(np.zeros((32, 48, 3), np.uint8))
    items = list(segment_stream([np.zeros((32, 48, 3), np.uint8)] * 3, seg))
    overlay(items[0].frame.image, items[0].result.labels, palette_lut(seg.meta))
assert res.labels.shape == (32, 48) and len(items) == 3
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.") or m == "mslseg.models")
print("loaded:", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loaded: []"

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
from mslseg.runtime.io.viz import palette_lut
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


def test_infer_cli_works_with_torch_uninstallable(tmp_path):
    """`mslseg infer` on an .onnx with torch made unimportable: a machine with only mslseg[cpu]."""
    video = models.write_video(tmp_path / "clip.mp4", n=4)
    code = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'")
sys.meta_path.insert(0, NoTorch())
from mslseg.cli.app import main
sys.argv = ["mslseg", "infer", {str(video)!r}, "--model", {str(models.onnx_model("uint8_labels"))!r},
            "--out", {str(tmp_path / "out")!r}, "--threads", "1"]
main()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("4 frames at native") and (tmp_path / "out" / "clip_overlay.mp4").is_file()

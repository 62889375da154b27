"""The examples use only the public runtime API, and the plain loop runs on a real video."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mslseg.runtime
from tests.runtime import models

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["segment_video.py", "ros2_segmenter_node.py"])
def test_examples_import_only_public_names(name):
    tree = ast.parse((EXAMPLES / name).read_text())
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names if (node.module or "").startswith("mslseg")]
    assert imported and all(module == "mslseg.runtime" for module, _ in imported)
    for _, name_ in imported:
        assert name_ in mslseg.runtime.__all__ and getattr(mslseg.runtime, name_) is not None


@pytest.mark.parametrize("model", ["deeplabv2", pytest.param("segformer-b0", marks=pytest.mark.slow)])
def test_plain_loop_example_runs(tmp_path, model):
    """The example runs any exported architecture unchanged: it sees only the runtime API."""
    video = models.write_video(tmp_path / "clip.mp4", n=6)
    path = models.onnx_model("uint8_labels") if model == "deeplabv2" else models.segformer_onnx()
    args = [str(EXAMPLES / "segment_video.py"), str(path), str(video),
            "--save", str(tmp_path / "o.mp4"), "--device", "cpu"]
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin"})
    assert out.returncode == 0, out.stderr
    assert "frame 6:" in out.stdout and (tmp_path / "o.mp4").stat().st_size > 0

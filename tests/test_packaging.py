"""The dependency direction DESIGN.md promises, checked in fresh interpreters; the extras it names."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_mslseg_is_light():
    code = "import sys, mslseg; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'cv2') if m in sys.modules))"
    assert _run(code) == "[]"


def test_runtime_never_imports_torch():
    code = "import sys, mslseg.runtime; print('torch' in sys.modules)"
    assert _run(code) == "False"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "mslseg", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mslseg ")


def _extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_tensorrt_is_its_own_extra():
    """TensorRT's libraries come from NVIDIA's index: where that is out of reach, only [tensorrt] fails."""
    extras = _extras()
    assert _names(extras["gpu"]) == {"onnxruntime-gpu", "cuda-python", "av"}
    assert any(r.startswith("onnxruntime-gpu[cuda,cudnn]") for r in extras["gpu"])  # CUDA/cuDNN as wheels
    assert _names(extras["tensorrt"]) == {"tensorrt"}
    assert "onnxruntime" in _names(extras["cpu"])
    for name, requirements in extras.items():  # the two wheels overwrite each other's files
        assert not {"onnxruntime", "onnxruntime-gpu"} <= _names(requirements), name

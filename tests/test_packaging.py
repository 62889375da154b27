"""The dependency direction DESIGN.md promises, checked in fresh interpreters."""

import subprocess
import sys


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

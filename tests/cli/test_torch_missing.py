"""Without torch (an install of mslseg[cpu] only), every command that needs it says so in one line.

Each command runs in a fresh interpreter where importing torch fails as it does when torch is
not installed; the registry of such commands is `NEEDS_TORCH` in mslseg/cli/app.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, NoTorch())
from mslseg.cli.app import main
sys.argv = ["mslseg", *sys.argv[1:]]
main()
"""

COMMANDS = {
    "demo": ["demo", "--out", "{tmp}/demo"],
    "train": ["train"],
    "adapt": ["adapt"],
    "evaluate": ["evaluate", "{tmp}/x.pt", "--data", "{tmp}"],
    "convert": ["convert", "{tmp}/x.pth", "{tmp}/y.pt", "--from", "msl"],
    "export": ["export", "{tmp}/x.pt"],
    "bench": ["bench", "{tmp}/x.pt"],
    "bench-mixed": ["bench", "{tmp}/x.onnx", "{tmp}/x.pt", "--out", "{tmp}/bench.json"],
    "infer": ["infer", "{tmp}/a.png", "--model", "{tmp}/x.pt", "--out", "{tmp}/out"],
}


@pytest.mark.parametrize("case", [  # three in the default tier (the 3-minute budget), every command in the full one
    c if c in ("infer", "train", "export") else pytest.param(c, marks=pytest.mark.slow) for c in COMMANDS])
def test_command_needing_torch_prints_one_line(tmp_path, case):
    for name in ("x.pt", "x.pth", "x.onnx", "a.png"):
        (tmp_path / name).write_bytes(b"not read: the torch check comes first")
    args = [a.format(tmp=tmp_path) for a in COMMANDS[case]]
    out = subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True,
                         timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "'torch'" in lines[0] and "mslseg[train]" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "demo").exists()

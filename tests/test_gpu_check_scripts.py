"""scripts/gpu_check.sh: its syntax, the shim that makes a plain checkout importable, and the
whole check on the CPU at tiny sizes (--cpu-dry-run), which is what can run without a GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GPU_CHECK"))}
    return {**env, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHON": sys.executable, **extra}


@needs_bash
def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH needs Python 3.11")
def test_shim_imports_from_the_repo_root_without_an_install(tmp_path):
    # the layout gpu_check.sh makes; -S skips site-packages' .pth files (and with them an editable
    # install of mslseg) while site-packages stays on PYTHONPATH for numpy; so only the shim can
    # provide mslseg.runtime, while cwd is the repo root with its own mslseg/
    shim = tmp_path / "mslseg"
    shim.mkdir()
    for f in (REPO / "mslseg").iterdir():
        (shim / f.name).symlink_to(f)
    (shim / "export").symlink_to(REPO / "export")
    (shim / "runtime").symlink_to(REPO / "runtime")
    code = "import mslseg, mslseg.runtime.sizes; print(mslseg.__file__)"
    site = os.pathsep.join(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    env = _env(PYTHONPATH=f"{tmp_path}{os.pathsep}{site}", PYTHONSAFEPATH="1")
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(tmp_path)), r.stdout
    # without PYTHONSAFEPATH the repo's own mslseg/ (no runtime/ inside) comes first: the bug it fixes
    env.pop("PYTHONSAFEPATH")
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "mslseg.runtime" in r.stderr


@pytest.mark.slow
@needs_bash
def test_cpu_dry_run_runs_every_stage_within_its_deadline(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--cpu-dry-run"], env=_env(GPU_CHECK_BUDGET_S="50"),
                       capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    out = r.stdout
    summary = out[out.index("=== summary"):]
    assert took < 60, (took, out[-3000:])
    for stage in ("probe", "adapt-resume", "speed", "step-matrix", "torch-runtime", "trt-standin", "export", "bench"):
        line = next(ln for ln in summary.splitlines() if ln.startswith(f"{stage}:"))
        # a loaded machine may reach the 50 s deadline early: the stage it cuts and those after it
        # say so (TIMED OUT, SKIPPED (deadline)); no stage may fail on its own
        assert line.startswith((f"{stage}: ok", f"{stage}: SKIPPED", f"{stage}: TIMED OUT")), \
            (line, out[-3000:], r.stderr[-2000:])
    assert "probe: ok" in summary and "adapt-resume: ok" in summary, summary

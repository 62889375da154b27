"""scripts/gpu_check.sh: its syntax, the shim that makes a plain checkout importable, and the
whole check on the CPU at tiny sizes (--cpu-dry-run), which is what can run without a GPU."""

from __future__ import annotations

import json
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


STAGES = ("probe", "adapt-resume", "speed", "torch-runtime", "trt-standin", "export", "bench", "step-matrix")


@pytest.mark.slow
@needs_bash
def test_cpu_dry_run_runs_every_stage_ok_and_exits_0(tmp_path):
    # every stage can run on a CPU, so every stage must say ok: a TIMED OUT or SKIPPED one fails
    # this test (the budget is generous for a loaded 2-core machine; ~90 s of CPU on an idle one)
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), str(out), "--cpu-dry-run"], env=_env(GPU_CHECK_BUDGET_S="200"),
                       capture_output=True, text=True, timeout=260)
    took = time.monotonic() - t0
    text = r.stdout
    summary = text[text.index("=== summary"):]
    lines = [ln for ln in summary.splitlines() if ln.split(":")[0] in STAGES]
    assert [ln.split(":")[0] for ln in lines] == list(STAGES), summary
    bad = [ln for ln in lines if not ln.split(": ", 1)[1].startswith("ok")]
    assert not bad, (bad, text[-4000:], r.stderr[-2000:])
    assert r.returncode == 0 and "all 8 stages ok" in summary, (r.returncode, summary)
    assert took < 200, took
    # the bench stage ran the GPU run's --device cuda command: every row SKIPPED, one error line,
    # the JSON written with the reasons; then the same files on the CPU, every row timed
    bench = text[text.index("=== bench ==="):text.index("=== step-matrix ===")]
    assert "--device cuda: 0 rows timed, 5 SKIPPED, rc=1: ok" in bench, bench
    assert "SKIPPED model_fp32.onnx: ONNX Runtime here lacks CUDAExecutionProvider" in bench, bench
    cpu_rows = json.loads((out / "bench_cpu.json").read_text())["rows"]
    assert len(cpu_rows) >= 3 and f"--device cpu: {len(cpu_rows)} rows timed, 0 SKIPPED, rc=0: ok" in bench, bench
    assert json.loads((out / "bench.json").read_text())["rows"] == []
    speed = json.loads((out / "train_speed.json").read_text())["rows"]
    assert [row["amp"] for row in speed] == ["strict-fp32", "off", "auto"] and not any(r["tf32"] for r in speed)
    assert "5/5 rows ok" in text


@needs_bash
def test_a_failing_stage_fails_the_script(tmp_path):
    # PYTHON that cannot run: every stage fails, the summary says so and the exit code is 1
    env = {**_env(GPU_CHECK_BUDGET_S="30"), "PYTHON": "false"}
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--cpu-dry-run"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout[-2000:]
    assert "probe: FAILED (rc=1" in r.stdout and "stages not ok" in r.stdout

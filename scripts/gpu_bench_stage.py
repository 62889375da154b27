"""Bench stage of scripts/gpu_check.sh: `mslseg bench` on the export stage's .pt and ONNX files with
the GPU run's flags (--device cuda), and a verdict on what it printed and wrote.

Each file must come out as timed rows or as SKIPPED lines (a runtime this machine lacks: ONNX
Runtime without its CUDA provider, torch without CUDA); the command exits 0 with bench.json when
any row ran, and 1 with one error line (bench.json still written, with the reasons) when none did.
On a GPU the .pt rows run on CUDA whatever ONNX Runtime is installed, so some row must run.
GPU_CHECK_CPU_DRY_RUN=1: the same command, where every row must say SKIPPED (no CUDA here), then
the same files with --device cpu, where every row must run, so the timing code runs too.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

dry = os.environ.get("GPU_CHECK_CPU_DRY_RUN") == "1"
out = Path(os.environ.get("OUT", "."))
size = os.environ.get("GPU_CHECK_SIZE", "1024x512")
files = [Path(f) for f in sys.argv[1:]]


def bench(device: str, json_path: Path) -> tuple[int, str, dict | None]:
    json_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "mslseg", "bench", *map(str, files), "--device", device, "--size", size,
           "--batch", "1", "--warmup", "2", "--repeats", "5", "--pipeline-frames", "0", "--out", str(json_path)]
    print("$ mslseg bench", " ".join(cmd[4:]), flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(r.stdout, end="", flush=True)
    report = json.loads(json_path.read_text()) if json_path.is_file() else None
    return r.returncode, r.stdout, report


def verdict(device: str, rc: int, text: str, report: dict | None, *, want_rows: bool,
            want_skips: bool | None) -> list[str]:
    """What is wrong with one run; [] when nothing is."""
    if report is None:
        return [f"--device {device}: no JSON written (rc={rc})"]
    problems = []
    lines = text.splitlines()
    rows, skipped = report["rows"], report["skipped"]
    for f in files:  # each file: timed rows, or SKIPPED lines printed and recorded
        timed = any(r["model"].split(" (")[0] == f.name for r in rows)
        skips = [s for s in skipped if s["row"].split(" (")[0] == f.name]
        printed = all(any(ln.startswith(f"SKIPPED {s['row']}: ") for ln in lines) for s in skips)
        if not timed and not (skips and printed):
            problems.append(f"--device {device}: {f.name} neither timed nor SKIPPED with a reason")
    errors = [ln for ln in lines if ln.startswith("error:")]
    if rows and (rc != 0 or errors):
        problems.append(f"--device {device}: {len(rows)} rows ran but rc={rc}, errors {errors}")
    if not rows and (rc != 1 or len(errors) != 1 or lines[-1] != errors[0]):
        problems.append(f"--device {device}: no row ran, so rc 1 and one last error line; got rc={rc}, {errors}")
    if want_rows and not rows:
        problems.append(f"--device {device}: no row ran")
    if want_skips is not None and bool(skipped) != want_skips:
        problems.append(f"--device {device}: {len(skipped)} rows SKIPPED, expected {'some' if want_skips else 'none'}")
    print(f"--device {device}: {len(rows)} rows timed, {len(skipped)} SKIPPED, rc={rc}: "
          f"{'ok' if not problems else 'FAILED'}", flush=True)
    return problems


problems = []
rc, text, report = bench("cuda", out / "bench.json")
# a GPU run must time something (the .pt on CUDA); a dry run sees no CUDA, so every row is SKIPPED
problems += verdict("cuda", rc, text, report, want_rows=not dry, want_skips=True if dry else None)
if dry:
    rc, text, report = bench("cpu", out / "bench_cpu.json")
    problems += verdict("cpu", rc, text, report, want_rows=True, want_skips=False)
for p in problems:
    print("FAILED:", p)
sys.exit(1 if problems else 0)

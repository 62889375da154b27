"""The stop-signal policy has one owner (mslseg.runtime.signals): training, `mslseg infer`, the cluster
driver and a Python caller of `run_infer` all stop the same way on Ctrl-C and SIGTERM."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import cv2

from mslseg.runtime.signals import STOP_SIGNALS, StopFlag, exit_code, stopped_by
from tests.runtime import models

REPO = Path(__file__).resolve().parents[2]
ENV = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)}

_CALLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from mslseg.runtime import Segmenter
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.io.sources import open_sources

    model, video, out = sys.argv[1:4]

    def on_frame(report):
        if report.frames == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's preemption, mid-video

    with Segmenter(model, device="cpu", batch_size=2, threads=1) as seg:
        try:
            run_infer(open_sources(video), seg, InferOptions(out=Path(out), labels="png"), on_frame=on_frame)
        finally:
            print("caller's finally ran", flush=True)
    print("went on after SIGTERM", flush=True)
""")


def _frames(path: Path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


def test_a_python_caller_of_run_infer_gets_the_policy_resumable_outputs_and_143(tmp_path):
    from mslseg.runtime import Segmenter
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.io.sources import open_sources

    model, video, out = models.onnx_model("uint8_labels"), models.write_video(tmp_path / "clip.mp4", n=20), tmp_path / "o"
    r = subprocess.run([sys.executable, "-c", _CALLER, str(model), str(video), str(out)], capture_output=True,
                       text=True, timeout=120, env=ENV, cwd=REPO)
    assert r.returncode == exit_code(signal.SIGTERM) == 143, r.stderr
    assert r.stdout.splitlines() == ["caller's finally ran"], r.stdout  # SystemExit: cleanup runs, the caller stops
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 6 <= summary["frames"] < 20
    assert _frames(out / "clip_overlay.mp4") == summary["frames"]  # a playable prefix
    assert not (out / ".done").exists() or not list((out / ".done").iterdir())  # not marked complete
    assert not [p for p in out.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]

    before = [signal.getsignal(s) for s in STOP_SIGNALS]
    with Segmenter(model, device="cpu", batch_size=2, threads=1) as seg:
        done = run_infer(open_sources(str(video)), seg, InferOptions(out=out, labels="png", resume=True))
    assert not done.interrupted and done.frames == 20 and _frames(out / "clip_overlay.mp4") == 20
    assert len(list((out / "labels" / "clip").glob("*.png"))) == 20
    assert [signal.getsignal(s) for s in STOP_SIGNALS] == before  # handlers restored after the run


def test_training_infer_and_cluster_share_the_owners_policy():
    from mslseg.cli.infer import _run_with_progress
    from mslseg.training.resume import StopSignals
    from mslseg.training.resume import stop_signals as training_stop_signals

    assert (exit_code(signal.SIGINT), stopped_by(signal.SIGINT)) == (130, "interrupted")
    assert stopped_by(signal.SIGTERM) == "stopped by SIGTERM"

    # training: the owner's flag and handler; a held SIGTERM sets the flag like everyone else's
    with training_stop_signals() as stops:
        assert isinstance(stops, StopSignals) and isinstance(stops, StopFlag)
        assert signal.getsignal(signal.SIGTERM) == stops.handle
        stops.holding = True
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.event.is_set() and stops.signum == signal.SIGTERM

    # `mslseg infer`: the stop event it hands to run_infer is the owner's flag, set by SIGTERM
    seen = {}

    def run_infer(sources, segmenter, opts, *, stop, on_frame):
        handler = signal.getsignal(signal.SIGTERM)
        seen["owner"] = isinstance(getattr(handler, "__self__", None), StopFlag)
        os.kill(os.getpid(), signal.SIGTERM)
        seen["stopped"] = stop.is_set()
        return "summary"

    before = [signal.getsignal(s) for s in STOP_SIGNALS]
    summary, signum = _run_with_progress([SimpleNamespace(expected=1, name="x")], None, None, run_infer)
    assert (summary, signum, seen) == ("summary", signal.SIGTERM, {"owner": True, "stopped": True})
    assert [signal.getsignal(s) for s in STOP_SIGNALS] == before

    # and nobody keeps a private copy: no handler for a stop signal, no 128 + signum, outside the owner
    assert _private_copies() == []


def _private_copies() -> list[str]:
    owner = REPO / "runtime" / "signals.py"
    found = []
    for folder in ("mslseg", "runtime", "export"):
        for path in (REPO / folder).rglob("*.py"):
            if path == owner:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "signal" and getattr(node.func.value, "id", "") == "signal"):
                    first = node.args[0] if node.args else None
                    # only a named signal other than the stop signals (SIGXFSZ) may be handled elsewhere
                    if not (isinstance(first, ast.Attribute) and first.attr not in ("SIGINT", "SIGTERM")):
                        found.append(where)
                elif (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
                      and 128 in (getattr(node.left, "value", None), getattr(node.right, "value", None))):
                    found.append(where)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "stopped by" in node.value:
                    found.append(where)
    return found

"""SIGKILL real processes at seeded random moments and pick up the pieces.

Adaptation: killed before its first checkpoint and at random points mid-run, resumed each time;
it completes, every checkpoint on disk loads after every kill, the metrics log has one record per
iteration, and the final weights equal an uninterrupted run's, bitwise (CPU, deterministic).
Synth: killed midway, every file under a final name is complete and --overwrite redoes it.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import cv2
import pytest
import torch

from mslseg.checkpoint import load_checkpoint

ITERATIONS = 8
ENV = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _cmd(synth_data, out, resume=False):
    if resume:
        return [sys.executable, "-m", "mslseg", "adapt", "--resume", str(out)]
    return [sys.executable, "-m", "mslseg", "adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"),
            "--target", str(synth_data / "cityscapes"), "--method", "iw-msl", "--multi-level", "--size", "64x32",
            "--batch", "2", "--iterations", str(ITERATIONS), "--out", str(out), "--device", "cpu",
            "--set", "target_val=null", "--set", "train.checkpoint_every=1", "--set", "train.workers=0",
            "--set", "train.log_every=1"]


def _records(out):
    path = out / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def _wait_for(proc, ready, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)


def _losses(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_uninterrupted_weights(synth_data, tmp_path):
    ref = subprocess.run(_cmd(synth_data, tmp_path / "ref"), env=ENV, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "killed"
    rng = random.Random(7)
    killed_at = []  # last.pt's iteration after each kill (None: no checkpoint yet)
    # first a kill during setup (the run dir may exist, last.pt not: the next start is fresh), then
    # two kills at random moments after a random iteration was logged (mid-step, mid-save, ...)
    plans = ["setup", *sorted(rng.sample(range(2, ITERATIONS - 2), 2))]
    for plan in plans:
        resume = (out / "last.pt").exists()
        proc = subprocess.Popen(_cmd(synth_data, out, resume), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if plan == "setup":
            _wait_for(proc, lambda: (out / "config.yaml").exists())
        else:
            _wait_for(proc, lambda plan=plan: _records(out) >= plan)
            time.sleep(rng.uniform(0.0, 0.25))  # a step takes ~0.3 s here
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for pt in out.glob("*.pt"):  # whatever is on disk under a final name loads
            load_checkpoint(pt)
        last = out / "last.pt"
        killed_at.append(load_checkpoint(last)["training"]["iteration"] if last.exists() else None)

    assert killed_at[0] is None  # the setup kill left no checkpoint: the next start was fresh
    assert all(it is not None and 0 < it < ITERATIONS for it in killed_at[1:]), killed_at  # resumed mid-run
    done = subprocess.run(_cmd(synth_data, out, resume=(out / "last.pt").exists()), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    a = load_checkpoint(tmp_path / "ref" / "last.pt")["state_dict"]
    b = load_checkpoint(out / "last.pt")
    assert b["training"]["iteration"] == ITERATIONS
    for key, value in a.items():
        assert torch.equal(value, b["state_dict"][key]), key
    load_checkpoint(out / "best.pt")
    assert _losses(out) == _losses(tmp_path / "ref")  # one record per iteration, the same values
    assert not list(out.glob(".*.tmp"))  # temporaries of interrupted writes are cleaned on resume


def _synth(out, source, *extra):
    return [sys.executable, "-m", "mslseg", "synth", str(out), "--source", str(source), "--target-train", "4",
            "--target-val", "2", "--size", "64x32", "--video-frames", "10", *extra]


@pytest.mark.slow
def test_synth_killed_midway_leaves_only_complete_files_and_can_be_redone(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen(_synth(out, 400), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, lambda: len(list((out / "gta5" / "labels").glob("*.png"))) >= 20)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for png in out.rglob("*.png"):
        assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED) is not None, png
    assert not json.loads((out / "synth.json").read_text())["complete"]
    r = subprocess.run(_synth(out, 6, "--overwrite"), env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "synth.json").read_text())["complete"]
    assert len(list((out / "gta5" / "images").glob("*.png"))) == 6
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporaries left behind

"""SIGKILL an adaptation at random moments, resume each time: it completes, every checkpoint on
disk loads, and the final weights equal an uninterrupted run's, bitwise (CPU)."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from mslseg.checkpoint import load_checkpoint

ITERATIONS = 8


def _cmd(synth_data, out, resume=False):
    if resume:
        return [sys.executable, "-m", "mslseg", "adapt", "--resume", str(out)]
    return [sys.executable, "-m", "mslseg", "adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"),
            "--target", str(synth_data / "cityscapes"), "--method", "iw-msl", "--multi-level", "--size", "64x32",
            "--batch", "2", "--iterations", str(ITERATIONS), "--out", str(out), "--device", "cpu",
            "--set", "target_val=null", "--set", "train.checkpoint_every=1", "--set", "train.workers=0",
            "--set", "train.log_every=1"]


ENV = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_uninterrupted_weights(synth_data, tmp_path):
    ref = subprocess.run(_cmd(synth_data, tmp_path / "ref"), env=ENV, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for _attempt in range(12):
        resume = (out / "last.pt").exists()
        proc = subprocess.Popen(_cmd(synth_data, out, resume), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if kills < 3:
            time.sleep(rng.uniform(3.0, 7.0))  # torch import takes ~2 s; steps ~0.3 s each
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                for pt in out.glob("*.pt"):  # whatever is on disk under a final name loads
                    load_checkpoint(pt)
                continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        if load_checkpoint(out / "last.pt")["training"]["iteration"] == ITERATIONS:
            break
    assert kills >= 1
    a = load_checkpoint(tmp_path / "ref" / "last.pt")["state_dict"]
    b = load_checkpoint(out / "last.pt")
    assert b["training"]["iteration"] == ITERATIONS
    for key, value in a.items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert not list(out.glob(".*.tmp"))  # temporaries of interrupted writes are cleaned on resume

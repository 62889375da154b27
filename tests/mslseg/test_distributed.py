"""Two gloo ranks with batch b give the weights of one process with batch 2b (BN frozen)."""

import os
import subprocess
import sys

import pytest
import torch

from mslseg.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def source_ckpt(synth_data, tmp_path_factory):
    """A briefly source-trained model, so that frozen BatchNorm holds real statistics."""
    out = tmp_path_factory.mktemp("dist") / "source"
    r = subprocess.run([sys.executable, "-m", "mslseg", "train", "-c", "synthetic", "--source",
                        str(synth_data / "gta5"), "--size", "64x32", "--iterations", "3", "--out", str(out),
                        "--set", "target_val=null", "--device", "cpu"],
                       capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "best.pt"


def _args(synth_data, init, out, batch, iterations=3):
    return ["adapt", "-c", "synthetic", "--init", str(init), "--source", str(synth_data / "gta5"), "--target",
            str(synth_data / "cityscapes"), "--method", "msl", "--single-level", "--size", "64x32",
            "--batch", str(batch), "--iterations", str(iterations), "--out", str(out), "--device", "cpu",
            "--set", "target_val=null", "--set", "model.bn=frozen", "--set", "train.workers=0",
            "--set", "train.checkpoint_every=2"]


def _torchrun(args, nproc=2, port=29617):
    env = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "mslseg", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_double_batch(synth_data, source_ckpt, tmp_path):
    one = subprocess.run([sys.executable, "-m", "mslseg", *_args(synth_data, source_ckpt, tmp_path / "one", 4)],
                         capture_output=True, text=True, timeout=300,
                         env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]
    _torchrun(_args(synth_data, source_ckpt, tmp_path / "two", 2))
    a = load_checkpoint(tmp_path / "one" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "two" / "last.pt")["state_dict"]
    for key, value in a.items():
        if value.is_floating_point():
            assert torch.allclose(value, b[key], rtol=1e-4, atol=1e-6), key
    moved = load_checkpoint(tmp_path / "one" / "last.pt")["training"]["iteration"]
    assert moved == 3


@pytest.mark.slow
def test_resume_across_world_sizes(synth_data, source_ckpt, tmp_path):
    """A 2-rank run of batch 2, stopped after 2 of 4 iterations and resumed by one process of
    batch 4, ends where a 1-process batch-4 run ends."""
    ref = subprocess.run([sys.executable, "-m", "mslseg", *_args(synth_data, source_ckpt, tmp_path / "ref", 4, 4)],
                         capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert ref.returncode == 0, ref.stderr[-3000:]
    _torchrun(_args(synth_data, source_ckpt, tmp_path / "mixed", 2, 4) + ["--set", "train.stop_after=2"], port=29618)
    stopped = load_checkpoint(tmp_path / "mixed" / "last.pt")["training"]
    assert stopped["iteration"] == 2
    # every rank's own RNG states, for a resume on 2 ranks (on 1, as here, rank 0's continue)
    assert len(stopped["rng_ranks"]) == 2 and torch.equal(stopped["rng_ranks"][0]["torch"], stopped["rng"]["torch"])
    resumed = subprocess.run([sys.executable, "-m", "mslseg", "adapt", "--resume", str(tmp_path / "mixed"),
                              "--set", "train.stop_after=null"],
                             capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_checkpoint(tmp_path / "ref" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "mixed" / "last.pt")
    assert b["training"]["iteration"] == 4 and b["training"]["world"] == 1
    for key, value in a.items():
        if value.is_floating_point():
            assert torch.allclose(value, b["state_dict"][key], rtol=1e-4, atol=1e-6), key

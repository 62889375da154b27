"""Gloo ranks through `distributed_context`: each gets its rank and LOCAL_RANK (its GPU on CUDA), and on
resume its own RNG state."""

import os
import socket
import subprocess
import sys

import pytest

from mslseg.training.resume import rank_rng

_RANK = """
from mslseg.training.distributed import distributed_context
with distributed_context("cpu") as d:
    print(f"rank={d.rank} world={d.world} local={d.local_rank}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_know_their_local_rank():
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = os.environ | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                            "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=120) for p in procs]
    for rank, (p, (out, err)) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, err[-2000:]
        assert f"rank={rank} world=2 local={rank}" in out


# Each rank seeds its own stream (as drop-path on its own GPU draws its own numbers), advances it,
# and either saves every rank's RNG states the way last.pt does (gather_rng -> rank 0 writes) and
# prints what it would draw next, or, launched again, resumes its state from the file and prints
# what it draws then.
_RNG = """
import sys
import torch
from mslseg.training.distributed import distributed_context
from mslseg.training.resume import gather_rng, rank_rng
from mslseg.training.device import restore_rng
phase, path = sys.argv[1], sys.argv[2]
with distributed_context("cpu") as d:
    if phase == "save":
        torch.manual_seed(100 + d.rank)
        torch.rand(5 + d.rank)
        states = gather_rng(d.world)
        if d.rank == 0:
            torch.save({"rng": states[0], "rng_ranks": states}, path)
    else:
        torch.manual_seed(0)
        restore_rng(rank_rng(torch.load(path, weights_only=True), d.rank, d.world))
    print(f"rank={d.rank} draw={torch.rand(4).tolist()}")
"""


def _launch(script: str, args: list[str], world: int) -> list[str]:
    """Runs `script` on `world` gloo ranks; each rank's stdout."""
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = os.environ | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                            "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        procs.append(subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    return [out.strip().splitlines()[-1] for out, _ in outs]


@pytest.mark.slow
def test_each_rank_resumes_its_own_rng_state(tmp_path):
    """Rank 1 draws after a resume what it would have drawn without the interruption (it used to
    get rank 0's state); resumed on one process, rank 0's state continues."""
    path = str(tmp_path / "rng.pt")
    uninterrupted = _launch(_RNG, ["save", path], 2)
    assert uninterrupted[0].split("draw=")[1] != uninterrupted[1].split("draw=")[1]  # the ranks' streams differ
    assert _launch(_RNG, ["resume", path], 2) == uninterrupted
    assert _launch(_RNG, ["resume", path], 1) == uninterrupted[:1]


def test_another_world_size_resumes_rank_0s_state_with_a_warning(caplog):
    training = {"rng": "rank0", "rng_ranks": ["rank0", "rank1"]}
    assert [rank_rng(training, r, 2) for r in (0, 1)] == ["rank0", "rank1"]
    assert not caplog.records
    assert [rank_rng(training, r, 3) for r in (0, 1, 2)] == ["rank0"] * 3
    assert "holds the RNG states of 2 ranks and this run has 3 ranks" in caplog.text
    assert [rank_rng({"rng": "rank0"}, r, 2) for r in (0, 1)] == ["rank0"] * 2  # written before per-rank states
    assert "rank 0 only" in caplog.text

"""Two gloo ranks through `distributed_context`: each gets its rank and LOCAL_RANK (its GPU on CUDA)."""

import os
import socket
import subprocess
import sys

import pytest

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

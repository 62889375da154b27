"""torch.distributed set-up for `torchrun ... -m mslseg adapt`: one process per GPU (or CPU rank)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as tdist

from mslseg.training.loop import Dist

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


@contextlib.contextmanager
def distributed_context(device: str = "auto") -> Iterator[Dist]:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); rank 0 of 1 otherwise.

    On CUDA each rank takes the GPU of its LOCAL_RANK.
    """
    if not launched_by_torchrun():
        yield Dist()
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    tdist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        dist = Dist(tdist.get_rank(), tdist.get_world_size())
        log.info("rank %d of %d (%s)", dist.rank, dist.world, "nccl" if use_cuda else "gloo")
        yield dist
    finally:
        tdist.destroy_process_group()

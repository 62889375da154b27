"""torch.distributed set-up for `torchrun ... -m mslseg adapt`: one process per GPU (or CPU rank)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as tdist

from mslseg.runtime.errors import ConfigError
from mslseg.training.device import rank_device
from mslseg.training.loop import Dist

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


@contextlib.contextmanager
def distributed_context(device: str = "auto") -> Iterator[Dist]:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); rank 0 of 1 otherwise.

    On CUDA each rank takes the GPU of its LOCAL_RANK, whatever `device` names (see `rank_device`).
    """
    if not launched_by_torchrun():
        yield Dist()
        return
    local_rank, world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])
    name, _ = rank_device(device, world=world, local_rank=local_rank, cuda_available=torch.cuda.is_available())
    use_cuda = name.startswith("cuda") and torch.cuda.is_available()  # else resolve_device says why
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible: "
                              "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
    tdist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        dist = Dist(tdist.get_rank(), tdist.get_world_size(), local_rank)
        log.info("rank %d of %d (%s, %s)", dist.rank, dist.world, "nccl" if use_cuda else "gloo",
                 name if use_cuda else "cpu")
        yield dist
    finally:
        tdist.destroy_process_group()

"""Stopping and resuming a run: Ctrl-C or SIGTERM at a whole step, and picking up from last.pt."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mslseg.runtime import signals as runtime_signals
from mslseg.runtime.errors import ConfigError
from mslseg.runtime.signals import StopFlag
from mslseg.training.config import RunConfig, load_config
from mslseg.training.device import capture_rng, restore_rng

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """A stop signal ended a run after `iteration` whole steps; `saved`: the iteration last.pt holds
    (None: none); `signum`: the first signal received (SIGINT for Ctrl-C, SIGTERM)."""

    def __init__(self, run_dir: Path, iteration: int, saved: int | None, iterations: int,
                 signum: int = signal.SIGINT):
        super().__init__(f"interrupted at iteration {iteration} of {iterations}")
        self.run_dir, self.iteration, self.saved, self.iterations = run_dir, iteration, saved, iterations
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process the signal ended: 130 for Ctrl-C, 143 for SIGTERM."""
        return runtime_signals.exit_code(self.signum)


class StopRequested(KeyboardInterrupt):
    """A stop signal, raised where the run can stop: between steps, or at once where nothing is held.

    `agreed`: every rank of a distributed run raised it after the same step (see `agreed_stop`).
    """

    def __init__(self, signum: int, *, agreed: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.agreed = signum, agreed


@dataclass
class Position:
    """How far a run got: whole steps done, the iteration last.pt holds, whether a step is under way."""

    done: int
    saved: int | None
    in_step: bool = False


class StopSignals(StopFlag):
    """SIGINT and SIGTERM as requests to stop at a whole step (installed by `stop_signals`).

    The policy is `mslseg.runtime.signals`'s (the first signal is recorded in `signum`; a second
    Ctrl-C raises KeyboardInterrupt at once; a repeated SIGTERM is ignored). Training adds: while
    `holding`, the loop asks `pending()` at the end of each step and stops there; otherwise the first
    signal raises `StopRequested` at once (setup, an evaluation: nothing is held that a stop would lose).
    """

    def __init__(self) -> None:
        super().__init__()
        self.holding = False

    def first(self, signum: int) -> None:
        if not self.holding:
            raise StopRequested(signum)

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """A block a signal may cut short (an evaluation): a held or new signal stops the run at once."""
        if self.signum is not None:
            raise StopRequested(self.signum)
        was, self.holding = self.holding, False
        try:
            yield
        finally:
            self.holding = was

    def pending(self, distributed: bool, device: torch.device) -> int:
        """The signal to stop on now (0: none). Distributed: `agreed_stop`, a collective every rank calls."""
        if distributed:
            return agreed_stop(self.signum or 0, device)
        return self.signum or 0


def stop_signals() -> contextlib.AbstractContextManager[StopSignals]:
    """`mslseg.runtime.signals.stop_signals` with training's `StopSignals`: main thread only, Python's
    default handlers only, restored after the block."""
    return runtime_signals.stop_signals(StopSignals())


def agreed_stop(signum: int, device: torch.device) -> int:
    """The largest signal number any rank holds (0: none), the same on every rank.

    Every rank calls it once per step, so all of them see a signal in the same call and stop after
    the same step, wherever it arrived (ranks get a forwarded signal at different steps). One int
    all_reduce: cheap on gloo and NCCL (the step already syncs with the GPU for its losses).
    """
    import torch.distributed as tdist

    flag = torch.tensor([signum], dtype=torch.int32, device=device)
    tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
    return int(flag.item())


def wait_for_peers() -> None:
    """After an agreed stop: every rank waits until rank 0 has written last.pt, then all exit together
    (a rank leaving early would make torchrun stop the others, rank 0 mid-save)."""
    import torch.distributed as tdist

    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: leave now
        tdist.barrier()


def resume_config(run_dir: str | Path, overrides: list[str] = ()) -> RunConfig:
    """The config a run directory was started with, plus `overrides` (`key=value` strings)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); check --resume")
    return load_config(path, list(overrides))


def rebatch_for_world(cfg: RunConfig, saved: dict[str, Any], world: int) -> RunConfig:
    """Resuming on another number of ranks keeps the total batch: per-rank batch = total / world."""
    was = (saved.get("training") or {}).get("world", 1)
    if was == world:
        return cfg
    train = cfg.train
    totals = (train.batch_source * was, train.batch_target * was)
    if any(t % world for t in totals):
        raise ConfigError(
            f"cannot resume a {was}-rank run on {world} ranks: total batches {totals} do not divide by {world}"
        )
    log.info("resuming a %d-rank run on %d ranks with the same total batch", was, world)
    return replace(cfg, train=replace(train, batch_source=totals[0] // world, batch_target=totals[1] // world))


def gather_rng(world: int) -> list[dict[str, Any]] | None:
    """Every rank's own RNG states (`capture_rng`: CPU, CUDA, Python, NumPy), in rank order, on rank 0;
    None on the other ranks. A collective under DDP: every rank calls it at the same step.

    Ranks draw their own random numbers (drop-path, dropout on their own GPU), so rank 0's states
    are not theirs: a resumed rank needs its own to continue bitwise.
    """
    state = capture_rng()
    if world == 1:
        return [state]
    import torch.distributed as tdist

    states: list[Any] | None = [None] * world if tdist.get_rank() == 0 else None
    # pickled through the process group: on NCCL via the rank's own GPU (distributed_context sets it)
    tdist.gather_object(state, states, dst=0)
    return states


def rank_rng(training: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """The RNG states rank `rank` of `world` resumes with: its own when last.pt was written by as
    many ranks, else rank 0's (resumed on another number of ranks; a warning under DDP)."""
    states = training.get("rng_ranks")
    if states and len(states) == world:
        return states[rank]
    if world > 1 and rank == 0:
        held = f"{len(states)} ranks" if states else "rank 0 only"
        log.warning("last.pt holds the RNG states of %s and this run has %d ranks: every rank resumes "
                    "with rank 0's, so random layers (drop-path, dropout) do not repeat bitwise", held, world)
    return training["rng"]


def restore_training(saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, *, own_cuda: int | None = None,
                     rank: int = 0, world: int = 1) -> tuple[int, float | None]:
    """Loads last.pt's model, optimiser, scaler and RNG states; returns (iteration, best mIoU).

    RNG: rank `rank` of `world` takes its own saved states (`rank_rng`); `own_cuda`, the GPU index
    of a distributed rank, restores that GPU's state only.
    """
    training = saved.get("training") or {}
    if "optimizer" not in training:
        raise ConfigError("last.pt holds no training state; it cannot be resumed")
    model.load_state_dict(saved["state_dict"])
    optimizer.load_state_dict(training["optimizer"])
    if scaler is not None and training.get("scaler"):
        scaler.load_state_dict(training["scaler"])
    restore_rng(rank_rng(training, rank, world), own_cuda=own_cuda)
    log.info("resumed at iteration %d", training["iteration"])
    return int(training["iteration"]), training.get("best_miou")

"""Stopping and resuming a run: Ctrl-C at a whole step, and picking up from last.pt."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mslseg.runtime.errors import ConfigError
from mslseg.training.config import RunConfig, load_config
from mslseg.training.runtime_env import restore_rng

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a run after `iteration` whole steps; `saved`: the iteration last.pt holds (None: none)."""

    def __init__(self, run_dir: Path, iteration: int, saved: int | None, iterations: int):
        super().__init__(f"interrupted at iteration {iteration} of {iterations}")
        self.run_dir, self.iteration, self.saved, self.iterations = run_dir, iteration, saved, iterations


@dataclass
class Position:
    """How far a run got: whole steps done, the iteration last.pt holds, whether a step is under way."""

    done: int
    saved: int | None
    in_step: bool = False


@contextlib.contextmanager
def sigint_held(hold: bool) -> Iterator[list[int]]:
    """Holds a Ctrl-C that arrives in the block until the block ends (a second one is not held),
    so that an interrupted run saves whole steps. The caller checks the list and stops.

    Only where Python's own handler is in place, in the main thread; not under DDP (`hold` False),
    where a rank finishing its step could wait forever on a peer that stopped.
    """
    held: list[int] = []
    if not (hold and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        yield held
        return

    def handler(signum: int, frame: Any) -> None:
        if held:
            raise KeyboardInterrupt
        held.append(signum)

    signal.signal(signal.SIGINT, handler)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


def restore_training(saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, *, own_cuda: int | None = None) -> tuple[int, float | None]:
    """Loads last.pt's model, optimiser, scaler and RNG states; returns (iteration, best mIoU).

    `own_cuda`: the GPU index of a distributed rank, which restores that GPU's RNG state only.
    """
    training = saved.get("training") or {}
    if "optimizer" not in training:
        raise ConfigError("last.pt holds no training state; it cannot be resumed")
    model.load_state_dict(saved["state_dict"])
    optimizer.load_state_dict(training["optimizer"])
    if scaler is not None and training.get("scaler"):
        scaler.load_state_dict(training["scaler"])
    restore_rng(training["rng"], own_cuda=own_cuda)
    log.info("resumed at iteration %d", training["iteration"])
    return int(training["iteration"]), training.get("best_miou")

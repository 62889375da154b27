"""What a run says and writes as it goes: its start line, metrics.jsonl, TensorBoard events, curves.png."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mslseg.runtime.io.atomic import atomic_write_text, writing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStart:
    """What a run is about to do, once its model and data are ready (see `describe`)."""

    target_loss: str  # none | minent | msl | iw-msl
    multi_level: bool  # aux-head losses (source CE, and guidance on target images)
    lambda_target: float
    arch: str  # deeplabv2-resnet18
    aux_head: bool
    device: str  # cpu | cuda:0 | cuda:0 bf16
    world: int  # ranks
    iterations: int  # the run's total
    start: int  # first iteration of this invocation (> 0: resumed)
    stop: int  # iteration this invocation ends at (< iterations with train.stop_after)
    source_images: int
    target_images: int | None  # None: no target data (source only)
    target_video: tuple[int, int] | None  # video targets: (frames in the files, files) they come from
    val_images: int | None
    images_per_step: int  # over all ranks
    run_dir: Path
    optimizer: str = ""  # sgd lr 0.0025 (heads x10): what the recipe and the config chose
    self_training: str = ""  # the mean teacher's settings (mslseg.training.self_training), or ""
    validation: str = ""  # without target labels: how best.pt is picked (label-free validation), or ""
    heldout_images: int = 0  # target frames held out of training for label-free validation

    @property
    def has_target_loss(self) -> bool:
        return self.target_images is not None and (self.loss != "none" or (self.multi_level and not self.self_training))

    @property
    def loss(self) -> str:
        """The method's own target loss (none for BN-only and the pure self-training methods)."""
        from mslseg.methods import METHODS

        entry = METHODS.get(self.target_loss)
        return entry.loss if entry is not None else self.target_loss

    def describe(self) -> str:
        """One line: method, lambda, model, device, iterations, images, run dir."""
        if self.target_images is None:
            method = "source only"
        elif self.self_training:
            method = f"{self.target_loss} ({self.self_training})"
            if self.loss != "none":
                method += " + multi-level" if self.multi_level else ""
        elif self.target_loss == "none":  # in words: "none + multi-level" read as BN-only to users
            method = ("no target loss, multi-level guidance on the aux head (BN statistics only: --single-level)"
                      if self.multi_level else "BatchNorm statistics only (no target loss)")
        else:
            method = self.target_loss + (" + multi-level" if self.multi_level else "")
        if not self.aux_head:  # a network without one runs single-level (training.loop.follow_network)
            method += ", single-level (the network has no auxiliary head)"
        parts = [method]
        if self.has_target_loss:
            parts.append(f"lambda_T {self.lambda_target:g}")
        parts.append(f"{self.arch} ({'main+aux heads' if self.aux_head else 'main head'})")
        if self.optimizer:
            parts.append(self.optimizer)
        parts.append(self.device + (f" x {self.world} ranks" if self.world > 1 else ""))
        if self.start:
            parts.append(f"resumed at iteration {self.start} of {self.iterations} from {self.run_dir / 'last.pt'}")
        else:
            parts.append(f"{self.iterations} iterations")
        if self.stop < self.iterations:
            parts.append(f"stopping at {self.stop} (train.stop_after)")
        images = [f"{self.source_images} source"]
        if self.target_images is not None:
            images.append(f"{self.target_images} target" + (f" + {self.heldout_images} held-out"
                                                             if self.heldout_images else ""))
        if self.val_images is not None:
            images.append(f"{self.val_images} val")
        text = " / ".join(images) + " images"
        if self.target_video is not None:
            frames, videos = self.target_video
            text += f" (target: {self.target_images + self.heldout_images} of {frames} frames from {videos} video{'s' * (videos != 1)})"
        parts.append(text)
        if self.validation:
            parts.append(self.validation)
        return ", ".join(parts) + f" -> {self.run_dir}"


def log_record(out: Path, board: Any, record: dict[str, Any], result: Any) -> None:
    append_metrics(out / "metrics.jsonl", record)
    result.history.append(record)
    if board is not None:
        for key, value in record.items():
            if key != "iteration":
                board.add_scalar(f"train/{key}", value, record["iteration"])


def tensorboard_writer(out: Path):
    """A TensorBoard writer into the run dir when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Append one line; a write the disk refuses (full, read-only) is cut back off and raises
    OutputError, so the file keeps whole lines only."""
    line = memoryview((json.dumps(record) + "\n").encode())
    with writing(path), open(path, "ab", buffering=0) as f:  # unbuffered: nothing left to flush later
        size = f.seek(0, os.SEEK_END)
        try:
            while line:  # a nearly full disk takes part of a write and refuses only the next one
                line = line[f.write(line):]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(f.fileno(), size)
            raise


def truncate_metrics(path: Path, iteration: int) -> None:
    """On resume, drop records logged after the checkpoint being resumed, and a line torn by a kill."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("iteration", 0) <= iteration:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def plot_run(out: Path) -> None:
    try:
        from mslseg.training.plots import plot_curves
    except ImportError:  # matplotlib is in the [train] extra; a run without it still completes
        log.warning("matplotlib is not installed; no curves.png (pip install 'mslseg[train]')")
        return
    plot_curves(out / "metrics.jsonl", out / "curves.png")

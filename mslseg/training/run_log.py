"""What a run writes as it goes: metrics.jsonl, TensorBoard events, curves.png."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mslseg.runtime.atomic import atomic_write_text

log = logging.getLogger(__name__)


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
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


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

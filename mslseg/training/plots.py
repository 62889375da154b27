"""Pictures of a run: training curves and a confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mslseg.runtime.atomic import atomic_path  # noqa: E402


def plot_curves(metrics: Path, out: Path) -> Path | None:
    """Losses per iteration and target mIoU per evaluation from metrics.jsonl."""
    if not metrics.exists():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss_source" in r]
    evals = [r for r in records if "eval" in r]
    if len(evals) < 2:  # one score is a number, not a curve
        evals = []
    if not steps:
        return None
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(10 if evals else 5.5, 3.6), squeeze=False)
    ax = axes[0, 0]
    its = [r["iteration"] for r in steps]
    for key, name in (("loss_source", "source CE"), ("loss_source_aux", "source CE (aux)"),
                      ("loss_target", "target loss"), ("loss_guidance", "guidance")):
        values = [r.get(key, 0.0) for r in steps]
        if any(values):
            ax.plot(its, values, label=name)
    ax.set_xlabel("iteration")
    ax.set_title("losses")
    ax.legend(fontsize=8)
    if evals:
        ax = axes[0, 1]
        ax.plot([r["iteration"] for r in evals], [100 * r["eval"]["miou"] for r in evals], marker="o")
        ax.set_xlabel("iteration")
        ax.set_title("target mIoU (%)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def plot_confusion(conf: np.ndarray, class_names: tuple[str, ...], out: Path) -> Path:
    """Row-normalised confusion matrix (rows: ground truth)."""
    conf = np.asarray(conf, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2.5, 0.45 * k + 2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out

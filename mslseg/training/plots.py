"""Pictures of a run: training curves and a confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mslseg.runtime.io.atomic import atomic_path  # noqa: E402


def draw_series(ax, xs: list, ys: list, **kwargs) -> bool:
    """Plot one curve; where it has few points, with markers (a single point draws no line).

    Returns False, drawing nothing, when no y is a number.
    """
    finite = sum(1 for y in ys if y is not None and np.isfinite(y))
    if not finite:
        return False
    kwargs.setdefault("marker", "o" if finite <= 30 else None)
    kwargs.setdefault("markersize", 3.5)
    ax.plot(xs, [np.nan if y is None else y for y in ys], **kwargs)
    return True


def finish_panel(ax, drawn: bool, empty: str = "no data") -> None:
    """A legend where curves have labels; `empty` in the middle of a panel with nothing drawn."""
    if not drawn:
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="grey", fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def loss_scale(ax, values: list) -> str:
    """A log y axis where the positive losses span a decade or more, else linear (returned).

    A log axis over less than a decade shows one labelled tick or none (a 10-iteration run's
    losses span 1.5..2.5), so short runs read better on a linear axis.
    """
    positive = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    if len(positive) < len(values) or not positive or max(positive) < 10 * min(positive):
        return "linear"
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    ax.set_yscale("log")
    decades = np.arange(np.floor(np.log10(min(positive))), np.ceil(np.log10(max(positive))) + 1)
    ax.yaxis.set_major_locator(FixedLocator([m * 10**d for d in decades for m in (1, 2, 3, 5)]))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    return "log"


def confusion_title(split: str, checkpoint: str | Path, iteration: int | None, miou: float) -> str:
    """`cityscapes val: adapted/last.pt (iteration 600), mIoU 41.2%`: the checkpoint with its folder
    (every run names its files best.pt and last.pt), the iteration where the checkpoint records one."""
    path = Path(checkpoint)
    name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    at = f" (iteration {iteration})" if iteration is not None else ""
    return f"{split}: {name}{at}, mIoU {100 * miou:.1f}%"


def run_title(run_dir: Path) -> str:
    """`runs/a: iw-msl + multi-level, lambda_T 0.09, deeplabv2-resnet18`, from the run's config.yaml
    (written into every run directory), so that a curves.png away from its folder says what ran."""
    import yaml

    name = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.parent.name else run_dir.name
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return name
    method, model = cfg.get("method") or {}, cfg.get("model") or {}
    loss, multi = method.get("target_loss", "none"), method.get("multi_level", False)
    if not cfg.get("target"):
        what = "source only"
    elif loss == "none":
        what = "BatchNorm statistics only" if not multi else "no target loss + multi-level guidance"
    else:
        what = f"{loss}{' + multi-level' if multi else ''}, lambda_T {method.get('lambda_target', 0):g}"
    arch = model.get("arch")
    return f"{name}: {what}" + (f", {arch}" if arch else "")


def _integer_iterations(ax, its: list[int]) -> None:
    """Iterations are whole numbers: no 1.5 or 1.975 ticks on a short run. A few points get a tick
    each (MaxNLocator falls back to fractions over a span under 1, e.g. one point)."""
    from matplotlib.ticker import MaxNLocator

    shown = sorted(set(its))
    if len(shown) <= 10:
        ax.set_xticks(shown)
        if len(shown) == 1:
            ax.set_xlim(shown[0] - 1, shown[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(metrics: Path, out: Path) -> Path | None:
    """Losses per iteration and target mIoU per evaluation from metrics.jsonl, titled with the run."""
    fig = curves_figure(metrics)
    if fig is None:
        return None
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def curves_figure(metrics: Path):  # -> matplotlib Figure | None (no records of steps)
    """The figure plot_curves writes."""
    if not metrics.exists():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss_source" in r]
    evals = [r for r in records if "eval" in r]
    if len(evals) < 2:  # one score is a number, not a curve
        evals = []
    free = [r for r in records if "label_free" in r]  # no target labels: label-free validation
    if len(free) < 2:
        free = []
    if not steps and not free:
        return None
    panels = 1 + bool(evals) + bool(free)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 + 4.5 * (panels - 1), 3.6), squeeze=False)
    ax = axes[0, 0]
    its = [r["iteration"] for r in steps]
    drawn = False
    for key, name in (("loss_source", "source CE"), ("loss_source_aux", "source CE (aux)"),
                      ("loss_target", "target loss"), ("loss_guidance", "guidance"),
                      ("loss_pseudo", "pseudo-label CE"), ("loss_mic", "MIC"),
                      ("loss_fd", "feature distance")):
        values = [r.get(key, 0.0) for r in steps]
        if any(values):
            drawn |= draw_series(ax, its, values, label=name)
    ax.set_xlabel("iteration")
    ax.set_title("losses")
    if its:
        _integer_iterations(ax, its)
    finish_panel(ax, drawn, "no losses logged yet (train.log_every)")
    if evals:
        ax = axes[0, 1]
        eval_its, mious = [r["iteration"] for r in evals], [100 * r["eval"]["miou"] for r in evals]
        draw_series(ax, eval_its, mious, marker="o")
        ax.set_xlabel("iteration")
        ax.set_title("target mIoU (%)")
        _integer_iterations(ax, eval_its)
        low, high = np.nanmin(mious), np.nanmax(mious)
        if high - low < 2:  # a flat curve is drawn flat, not magnified to 3.80..4.20
            ax.set_ylim(max(0.0, (low + high) / 2 - 1), (low + high) / 2 + 1)
    if free:
        _label_free_panel(axes[0, panels - 1], free)
    fig.suptitle(run_title(metrics.parent), fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def _label_free_panel(ax, records: list[dict]) -> None:
    """The label-free signals per evaluation (held-out target frames, no labels), the score that
    picks best.pt in bold; a collapse is a red cross, the reference a black ring."""
    its = [r["iteration"] for r in records]
    score = records[-1]["label_free"].get("score", "score")
    for key, name in (("confidence", "confidence"), ("flip_agreement", "flip agreement"), ("atc", "ATC accuracy")):
        values = [r["label_free"].get(key) for r in records]
        if any(v is not None for v in values):
            draw_series(ax, its, [np.nan if v is None else v for v in values], label=name, alpha=0.6)
    values = [r["label_free"].get("value") for r in records]
    draw_series(ax, its, [np.nan if v is None else v for v in values], label=f"{score} (picks best.pt)",
                marker="o", linewidth=2, color="black")
    for r, v in zip(records, values, strict=True):
        at = v if v is not None else r["label_free"]["confidence"]
        if "collapse" in r:
            ax.plot([r["iteration"]], [at], "x", color="red", markersize=10, mew=2, label="collapse")
        if r.get("reference"):
            ax.plot([r["iteration"]], [at], "o", mfc="none", color="black", markersize=11, label="reference")
    ax.set_xlabel("iteration")
    ax.set_title("label-free (held-out target, no labels)")
    ax.set_ylim(0, 1.02)
    _integer_iterations(ax, its)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=7)


def plot_confusion(conf: np.ndarray, class_names: tuple[str, ...], out: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: ground truth); `title` says what was scored
    (`confusion_title`), so a picture away from its scores.json still says which run it is."""
    conf = np.asarray(conf, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2.5, 0.45 * k + 2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out

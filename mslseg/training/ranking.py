"""`mslseg rank`: checkpoints on unlabelled target footage, ranked by a label-free score.

Each model is measured on the same evenly spread frames (mslseg.training.label_free): the signals,
the class shares against a reference (the source model: --reference, else the first checkpoint),
the collapse check a run applies (label_free_run.describe_collapse), ATC's estimated pixel accuracy
(with labelled source frames) and its 95% interval over the frames. Writes rank.json,
class_share.png (per-class pixel share, reference vs each model) and disagreement.png (the frames
where the top-ranked model and the reference disagree most, side by side).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Subset

from mslseg.checkpoint import load_checkpoint, model_from_checkpoint, refuse_exported
from mslseg.data import build_dataset
from mslseg.data.config import DataConfig
from mslseg.runtime.errors import ConfigError, DataError
from mslseg.runtime.io.atomic import atomic_write_bytes, atomic_write_text, writing
from mslseg.runtime.metadata import ModelMeta, resolve_run_size
from mslseg.runtime.sizes import Size
from mslseg.training.device import resolve_device
from mslseg.training.label_free import Signals, SourceFit, measure, source_fit
from mslseg.training.label_free_run import BATCH, SOURCE_FRAMES, describe_collapse

GRID_FRAMES = 4  # rows of disagreement.png


@dataclass
class Ranked:
    path: str
    signals: Signals
    score: float | None
    collapse: str | None
    fit: SourceFit | None = None
    atc_interval: tuple[float, float] | None = None  # 95% over the frames

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.path, "score": self.score, "collapse": self.collapse,
                "source_accuracy": self.fit.accuracy if self.fit else None,
                "atc_interval": list(self.atc_interval) if self.atc_interval else None, **self.signals.to_dict()}


@dataclass
class Ranking:
    ranked: list[Ranked]  # best first, collapsed last
    class_names: tuple[str, ...]
    reference: str  # the checkpoint the class shares are compared with
    frames: int
    written: list[Path]  # rank.json and the pictures


@dataclass
class _Model:
    path: str
    net: torch.nn.Module
    meta: ModelMeta


def _load(path: Path, device: torch.device) -> _Model:
    refuse_exported(path, "mslseg rank measures .pt checkpoints (rank the checkpoints the exports came from)")
    net, meta = model_from_checkpoint(load_checkpoint(path), str(path))
    return _Model(str(path), net.to(device).eval(), meta)


def _frames(footage: DataConfig, meta: ModelMeta, size: Size | str | None, frames: int):
    """`frames` frames spread evenly over the footage, read as `meta`'s model runs them."""
    chosen = resolve_run_size(size, meta)
    data = footage if footage.size is not None or chosen.size is None else replace(
        footage, size=chosen.size, interpolation=chosen.interpolation)
    dataset = build_dataset(data, meta.normalization, train=False)
    n = len(dataset)
    picked = sorted({round(i * (n - 1) / max(1, frames - 1)) for i in range(min(frames, n))}) if n > 1 else [0]
    return Subset(dataset, picked)


def _batches(frames: Subset):
    for k in range(0, len(frames), BATCH):
        yield torch.stack([frames[i]["image"] for i in range(k, min(k + BATCH, len(frames)))])


def _labelled(source: DataConfig, meta: ModelMeta):
    dataset = build_dataset(source, meta.normalization, train=False)
    n = min(SOURCE_FRAMES, len(dataset))
    for k in range(0, n, BATCH):
        items = [dataset[i] for i in range(k, min(k + BATCH, n))]
        yield torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])


@torch.no_grad()
def _per_frame(model: _Model, frames: Subset, device: torch.device, threshold: float | None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Each frame's predicted labels (N, H, W) uint8 and share of pixels above ATC's threshold."""
    labels, above = [], []
    for images in _batches(frames):
        logits = model.net(images.to(device))
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        if logits.shape[-2:] != images.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear",
                                                     align_corners=False)
        top, pred = logits.float().softmax(1).max(1)
        labels.append(pred.to(torch.uint8).cpu().numpy())
        if threshold is not None:
            above.extend((top > threshold).float().mean(dim=(1, 2)).cpu().tolist())
    return np.concatenate(labels), (np.asarray(above) if threshold is not None else None)


def rank_checkpoints(footage: DataConfig, checkpoints: list[Path], out: Path, *, reference: Path | None = None,
                     source: DataConfig | None = None, frames: int = 64, score: str = "class_confidence",
                     size: Size | str | None = None, device: str = "auto") -> Ranking:
    """Measure every checkpoint on `frames` frames of `footage`; ranked best first (collapsed last)."""
    if not checkpoints:
        raise ConfigError("give at least one checkpoint to rank")
    if len(set(map(str, checkpoints))) != len(checkpoints):
        raise ConfigError("a checkpoint is given twice; give each once")
    dev = resolve_device(device)
    models = [_load(p, dev) for p in checkpoints]
    ref = _load(reference, dev) if reference is not None else models[0]
    names = tuple(ref.meta.class_names)
    for m in models:
        if tuple(m.meta.class_names) != names:
            raise ConfigError(f"{m.path} predicts {m.meta.num_classes} classes ({', '.join(m.meta.class_names[:3])}, "
                              f"...), {ref.path} {len(names)} ({', '.join(names[:3])}, ...): rank models of one class set")
    # every model reads the frames as it runs them (its normalisation and size): one read per way
    reads: dict[tuple, Subset] = {}

    def frames_for(m: _Model) -> Subset:
        key = (m.meta.normalization, resolve_run_size(size, m.meta).size)
        if key not in reads:
            reads[key] = _frames(footage, m.meta, size, frames)
        return reads[key]

    ref_frames = frames_for(ref)
    ref_signals = measure(ref.net, _batches(ref_frames), len(names), device=dev)
    ref_labels, _ = _per_frame(ref, ref_frames, dev, None)
    ranked, labels = [], {}
    for m in models:
        own = frames_for(m)
        fit = source_fit(m.net, _labelled(source, m.meta), device=dev) if source is not None else None
        same_input = own is ref_frames
        s = measure(m.net, _batches(own), len(names), device=dev, reference=ref_signals.class_share,
                    other=ref.net if same_input and m is not ref else None,
                    atc_threshold=fit.threshold if fit else None)
        if fit is not None:
            s.source_accuracy = fit.accuracy
        labels[m.path], above = _per_frame(m, own, dev, fit.threshold if fit else None)
        interval = None
        if above is not None and len(above) > 1:
            half = 1.96 * float(above.std(ddof=1)) / math.sqrt(len(above))
            interval = (max(0.0, float(above.mean()) - half), min(1.0, float(above.mean()) + half))
        collapsed = describe_collapse(s, ref_signals, names, "the footage") if m is not ref else None
        ranked.append(Ranked(m.path, s, s.score(score), collapsed, fit, interval))
    ranked.sort(key=lambda r: (r.collapse is not None, r.score is None, -(r.score or 0.0)))
    out = Path(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    report = {"footage": footage.root, "frames": len(ref_frames), "score": score, "reference": ref.path,
              "reference_signals": ref_signals.to_dict(), "class_names": list(names),
              "ranking": [r.to_dict() for r in ranked]}
    atomic_write_text(out / "rank.json", json.dumps(report, indent=2))
    written = [out / "rank.json", plot_class_share(ref, ref_signals, ranked, names, out / "class_share.png")]
    best = next((r for r in ranked if r.path != ref.path), None)  # the top model other than the reference
    if best is not None and labels[best.path].shape == ref_labels.shape:
        written.append(disagreement_grid(ref_frames, ref, ref_labels, best.path, labels[best.path],
                                         out / "disagreement.png"))
    return Ranking(ranked, names, ref.path, len(ref_frames), [p for p in written if p is not None])


def plot_class_share(ref: _Model, ref_signals: Signals, ranked: list[Ranked], names: tuple[str, ...],
                     out: Path) -> Path | None:
    """Grouped bars: each class's share of the predicted pixels, reference first."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [(f"{short_name(ref.path)} (reference)", ref_signals.class_share)] + [
        (short_name(r.path) + (" (collapsed)" if r.collapse else ""), r.signals.class_share)
        for r in ranked if r.path != ref.path]
    # the classes some model predicts on >= 0.1% of the pixels (a vanished one: the reference does)
    shown = [k for k in range(len(names)) if any(share[k] >= 0.001 for _, share in rows)] or list(range(len(names)))
    x = np.arange(len(shown))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(min(16.0, max(7.0, 0.35 * len(shown) * len(rows) + 2)), 4.2))
    for k, (label, share) in enumerate(rows):
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, [100 * share[c] for c in shown], width, label=label)
    ax.set_xticks(x, [names[c] for c in shown], rotation=30, ha="right")
    ax.set_ylabel("% of predicted pixels")
    ax.set_title("Predicted class shares on the footage\n(a class the reference finds that vanishes: a collapse)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with writing(out):
        fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def short_name(path: str) -> str:
    """A checkpoint as the pictures name it: its folder and file (runs/a/best.pt -> a/best.pt)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def disagreement_grid(frames: Subset, ref: _Model, ref_labels: np.ndarray, other: str, other_labels: np.ndarray,
                      out: Path) -> Path:
    """The GRID_FRAMES frames where `other` and the reference disagree most: frame | reference |
    other | where they differ (white), one row each."""
    differ = ref_labels != other_labels
    share = differ.reshape(len(differ), -1).mean(1)
    rows = []
    palette = np.asarray(ref.meta.palette, np.uint8)[:, ::-1]  # BGR
    for i in np.argsort(-share, kind="stable")[:GRID_FRAMES]:
        image = _bgr_frame(frames[int(i)]["image"], ref.meta)
        mask = np.repeat((differ[i] * 255).astype(np.uint8)[..., None], 3, axis=2)
        tiles = [image, palette[ref_labels[i]], palette[other_labels[i]], mask]
        captions = [str(frames[int(i)]["name"]), f"reference {short_name(ref.path)}", short_name(other),
                    f"differ on {100 * share[i]:.0f}% of pixels"]
        rows.append(np.concatenate([_caption(t, c) for t, c in zip(tiles, captions, strict=True)], axis=1))
    grid = np.concatenate(rows, axis=0)
    ok, png = cv2.imencode(".png", grid)
    if not ok:
        raise DataError(f"cannot encode {out} as PNG")
    atomic_write_bytes(out, png.tobytes(), sync=False)
    return out


def _bgr_frame(image: torch.Tensor, meta: ModelMeta) -> np.ndarray:
    """A normalised (3, H, W) network input back to a uint8 BGR frame."""
    norm = meta.normalization
    x = image.permute(1, 2, 0).numpy() * np.asarray(norm.std) + np.asarray(norm.mean)
    x = np.clip(x, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x if norm.order == "bgr" else x[..., ::-1])


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    """`tile` at least 256 px wide (nearest), with `text` on a strip above it."""
    h, w = tile.shape[:2]
    if w < 256:
        tile = cv2.resize(tile, (256, max(1, round(h * 256 / w))), interpolation=cv2.INTER_NEAREST)
    strip = np.full((18, tile.shape[1], 3), 32, np.uint8)
    cv2.putText(strip, text[:40], (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, np.ascontiguousarray(tile)], axis=0)

"""`mslseg rank`: checkpoints and exported models on unlabelled target footage, ranked by a label-free score.

Each model is measured on the same evenly spread frames (mslseg.training.label_free): the signals,
the class shares against a reference (the source model: --reference, else the first checkpoint),
the collapse check a run applies (label_free_run.describe_collapse), ATC's estimated pixel accuracy
(with labelled source frames) and its 95% interval over the frames. Writes rank.json,
class_share.png (per-class pixel share, reference vs each model) and disagreement.png (the frames
where the top-ranked model and the reference disagree most, side by side).

A checkpoint (.pt) is measured in torch, with every signal. An exported model (.onnx, .engine)
runs through the runtime's Segmenter, as it would be deployed: from its labels and confidence
come the class shares, confidence, class confidence, flip agreement and ATC; entropy, IM and the
scale agreement need the probabilities or another run size and stay empty. A labels-only export
gives no confidence-based signal.
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

from mslseg.checkpoint import exported_kind, load_checkpoint, model_from_checkpoint
from mslseg.data import build_dataset
from mslseg.data.config import DataConfig
from mslseg.label_free_scores import DEFAULT_SCORE
from mslseg.runtime.errors import ConfigError, DataError, ModelFormatError
from mslseg.runtime.io.atomic import atomic_write_bytes, atomic_write_text, writing
from mslseg.runtime.metadata import ModelMeta, Normalization, resolve_run_size
from mslseg.runtime.sizes import Size
from mslseg.training.device import resolve_device
from mslseg.training.label_free import PRESENT, Signals, SourceFit, fit_from, measure, source_fit
from mslseg.training.label_free import collapse as collapse_classes
from mslseg.training.label_free_run import BATCH, SOURCE_FRAMES, describe_collapse

GRID_FRAMES = 4  # rows of disagreement.png
RAW = Normalization(order="bgr", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # frames as uint8 BGR, for a Segmenter


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
    meta: ModelMeta
    net: torch.nn.Module | None = None  # a checkpoint's network
    segmenter: Any = None  # an exported model's runtime Segmenter

    @property
    def reads(self) -> Normalization:
        """How its frames are read: normalised for a network, raw uint8 BGR for a Segmenter."""
        return self.meta.normalization if self.net is not None else RAW


def _load(path: Path, device: str, dev: torch.device, size: Size | str | None) -> _Model:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give checkpoints (.pt) or exported models (.onnx, .engine)")
    if exported_kind(path) is None:
        net, meta = model_from_checkpoint(load_checkpoint(path), str(path))
        return _Model(str(path), meta, net=net.to(dev).eval())
    from mslseg.runtime.segmenter import Segmenter

    try:
        seg = Segmenter(path, device=device, batch_size=BATCH, confidence=True, size=size)
    except ModelFormatError as exc:  # labels only: no confidence to measure, the rest still is
        if "outputs labels only" not in str(exc):
            raise
        seg = Segmenter(path, device=device, batch_size=BATCH, confidence=False, size=size)
    return _Model(str(path), seg.meta, segmenter=seg)


def _frames(footage: DataConfig, m: _Model, size: Size | str | None, frames: int):
    """`frames` frames spread evenly over the footage, read as the model `m` runs them."""
    chosen = resolve_run_size(size, m.meta)
    data = footage if footage.size is not None or chosen.size is None else replace(
        footage, size=chosen.size, interpolation=chosen.interpolation)
    dataset = build_dataset(data, m.reads, train=False)
    n = len(dataset)
    picked = sorted({round(i * (n - 1) / max(1, frames - 1)) for i in range(min(frames, n))}) if n > 1 else [0]
    return Subset(dataset, picked)


def _batches(frames: Subset):
    for k in range(0, len(frames), BATCH):
        yield torch.stack([frames[i]["image"] for i in range(k, min(k + BATCH, len(frames)))])


def _labelled(source: DataConfig, m: _Model, size: Size | str | None):
    """Labelled source batches (image, label) read as `m` runs them, at its run size."""
    chosen = resolve_run_size(size, m.meta)
    if source.size is None and chosen.size is not None:
        source = replace(source, size=chosen.size, interpolation=chosen.interpolation)
    dataset = build_dataset(source, m.reads, train=False)
    n = min(SOURCE_FRAMES, len(dataset))
    for k in range(0, n, BATCH):
        items = [dataset[i] for i in range(k, min(k + BATCH, n))]
        yield torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])


def _uint8(images: torch.Tensor) -> list[np.ndarray]:
    """RAW-read (N, 3, H, W) batches as the uint8 BGR frames a Segmenter takes."""
    return [np.ascontiguousarray(x) for x in images.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()]


def _segmented(m: _Model, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """An exported model's labels (N, H, W) and confidence (None for a labels-only export)."""
    segs = m.segmenter.segment(_uint8(images))
    labels = np.stack([s.labels for s in segs]).astype(np.int64)
    conf = np.stack([s.confidence for s in segs]) if segs[0].confidence is not None else None
    return labels, conf


def _export_fit(m: _Model, batches) -> SourceFit | None:
    """SourceFit of an exported model on labelled source batches (None without a confidence)."""
    confs, correct, counts = [], 0, None
    for images, label in batches:
        pred, conf = _segmented(m, images)
        if conf is None:
            return None
        truth = label.numpy()
        valid = truth != 255
        confs.append(torch.from_numpy(conf[valid].astype(np.float32)))
        correct += int((pred[valid] == truth[valid]).sum())
        seen = torch.bincount(torch.from_numpy(truth[valid]).long(), minlength=m.meta.num_classes)
        counts = seen if counts is None else counts + seen
    return fit_from(torch.cat(confs) if confs else torch.zeros(0), correct, counts)


def _export_signals(m: _Model, frames: Subset, reference: tuple[float, ...] | None,
                    threshold: float | None, per_frame: list) -> Signals:
    """The signals an exported model gives through the Segmenter (see the module docstring);
    `per_frame` gets what `label_free.measure` gives it."""
    c = m.meta.num_classes
    share = np.zeros(c)
    conf_by_class = np.zeros(c)
    n_pix = flip_same = above = conf_sum = 0.0
    has_conf = True
    for images in _batches(frames):
        labels, conf = _segmented(m, images)
        per_frame.append((labels.astype(np.uint8), (conf > threshold).reshape(len(conf), -1).mean(1)
                          if threshold is not None and conf is not None else None))
        flipped, _ = _segmented(m, images.flip(-1))
        flip_same += float((flipped[..., ::-1] == labels).sum())
        share += np.bincount(labels.ravel(), minlength=c)[:c]
        n_pix += labels.size
        if conf is None:
            has_conf = False
            continue
        conf_sum += float(conf.sum())
        conf_by_class += np.bincount(labels.ravel(), weights=conf.ravel().astype(np.float64), minlength=c)[:c]
        if threshold is not None:
            above += float((conf > threshold).sum())
    per_class = np.where(share > 0, conf_by_class / np.maximum(share, 1), 0.0)
    s = Signals(frames=len(frames), confidence=conf_sum / n_pix if has_conf else None, entropy=None, im=None,
                flip_agreement=flip_same / n_pix, scale_agreement=None,
                class_share=tuple(float(v) for v in share / n_pix),
                atc=above / n_pix if has_conf and threshold is not None else None,
                confidence_by_class=tuple(float(v) for v in per_class) if has_conf else ())
    if reference is not None:
        present = [k for k, r in enumerate(reference) if r >= PRESENT]
        if has_conf and present:
            s.class_confidence = float(np.mean([per_class[k] for k in present]))
        s.vanished = collapse_classes(s.class_share, reference)
    return s


def rank_checkpoints(footage: DataConfig, checkpoints: list[Path], out: Path, *, reference: Path | None = None,
                     source: DataConfig | None = None, frames: int = 64, score: str = DEFAULT_SCORE,
                     size: Size | str | None = None, device: str = "auto") -> Ranking:
    """Measure every checkpoint on `frames` frames of `footage`; ranked best first (collapsed last)."""
    if not checkpoints:
        raise ConfigError("give at least one checkpoint to rank")
    if len(set(map(str, checkpoints))) != len(checkpoints):
        raise ConfigError("a checkpoint is given twice; give each once")
    dev = resolve_device(device)
    loaded: list[_Model] = []
    try:
        for path in checkpoints:
            loaded.append(_load(path, device, dev, size))
        models = list(loaded)
        ref = models[0]
        if reference is not None:
            loaded.append(ref := _load(reference, device, dev, size))
        return _rank(models, ref, footage, out, source, frames, score, size, dev)
    finally:
        for m in loaded:
            if m.segmenter is not None:
                m.segmenter.close()


def _rank(models: list[_Model], ref: _Model, footage: DataConfig, out: Path, source: DataConfig | None,
          frames: int, score: str, size: Size | str | None, dev: torch.device) -> Ranking:
    names = tuple(ref.meta.class_names)
    for m in models:
        if tuple(m.meta.class_names) != names:
            raise ConfigError(f"{m.path} predicts {m.meta.num_classes} classes ({', '.join(m.meta.class_names[:3])}, "
                              f"...), {ref.path} {len(names)} ({', '.join(names[:3])}, ...): rank models of one class set")
    # every model reads the frames as it runs them (normalised or raw, its size): one read per way
    reads: dict[tuple, Subset] = {}

    def frames_for(m: _Model) -> Subset:
        key = (m.reads, resolve_run_size(size, m.meta).size)
        if key not in reads:
            reads[key] = _frames(footage, m, size, frames)
        return reads[key]

    def signals_of(m: _Model, own: Subset, shares: tuple[float, ...] | None, fit: SourceFit | None
                   ) -> tuple[Signals, np.ndarray, np.ndarray | None]:
        """The signals, each frame's labels (N, H, W) and share of pixels above ATC's threshold: one pass."""
        threshold = fit.threshold if fit is not None else None
        kept: list = []
        if m.net is not None:
            s = measure(m.net, _batches(own), len(names), device=dev, reference=shares, atc_threshold=threshold,
                        per_frame=kept)
        else:
            s = _export_signals(m, own, shares, threshold, kept)
        above = [a for _, a in kept if a is not None]
        return s, np.concatenate([lab for lab, _ in kept]), (np.concatenate(above) if above else None)

    def fit_of(m: _Model) -> SourceFit | None:
        if source is None:
            return None
        batches = _labelled(source, m, size)
        return source_fit(m.net, batches, device=dev) if m.net is not None else _export_fit(m, batches)

    ref_frames = frames_for(ref)
    ref_signals, ref_labels, _ = signals_of(ref, ref_frames, None, None)
    ranked, labels = [], {}
    for m in models:
        own = frames_for(m)
        fit = fit_of(m)
        s, labels[m.path], above = signals_of(m, own, ref_signals.class_share, fit)
        if fit is not None:
            s.source_accuracy = fit.accuracy
        if m is not ref and labels[m.path].shape == ref_labels.shape:
            s.agreement = float((labels[m.path] == ref_labels).mean())
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
        image = _bgr_frame(frames[int(i)]["image"], ref.reads)
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


def _bgr_frame(image: torch.Tensor, norm: Normalization) -> np.ndarray:
    """A (3, H, W) input read with `norm` back to a uint8 BGR frame."""
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

"""The demo's two pictures: an overlay before/after adaptation, and the curves of both runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mslseg.training.metrics import Scores

_LABELS = ("target frame", "ground truth", "source only", "adapted")


def before_after_picture(source_ckpt: Path, adapted_ckpt: Path, val: object, dst: Path,
                         index: int = 0) -> Path:
    """Frame `index` of the target val split: the frame, its labels, both models' overlays, a legend.

    `val` is the DataConfig the demo evaluates on; each model sees the same input as in its
    evaluation (the dataset's resize and normalisation), its labels are shown at the frame's size.
    """
    import cv2
    import torch

    from mslseg.checkpoint import load_model
    from mslseg.data import build_dataset
    from mslseg.runtime.atomic import atomic_write_bytes
    from mslseg.runtime.viz import overlay, palette_lut

    panels, shown = [], set()
    frame = gt = None
    for ckpt in (source_ckpt, adapted_ckpt):
        model, meta = load_model(ckpt)
        dataset = build_dataset(val, meta.normalization, train=False)
        if frame is None:
            frame, gt, _ = dataset.frames.load(index)  # BGR at the generated size, train ids
            lut = palette_lut(meta, "bgr")
            gt_shown = np.where(gt == 255, 0, gt).astype(np.uint8)
            panels += [frame, np.where((gt == 255)[..., None], frame // 3, overlay(frame, gt_shown, lut, 0.55))]
            shown.update(np.unique(gt[gt != 255]).tolist())
        with torch.no_grad():
            pred = model(dataset[index]["image"][None]).argmax(1)[0].numpy().astype(np.uint8)
        pred = cv2.resize(pred, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        panels.append(overlay(frame, pred, lut, 0.55))
        shown.update(np.unique(pred).tolist())
    h, w = frame.shape[:2]
    header = np.full((22, 4 * w, 3), 255, np.uint8)
    for i, text in enumerate(_LABELS):
        cv2.putText(header, text, (i * w + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    picture = np.vstack([header, np.hstack(panels), _legend_row(meta.class_names, lut, sorted(shown), 4 * w)])
    ok, png = cv2.imencode(".png", picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return atomic_write_bytes(dst, png.tobytes())


def _legend_row(names: tuple[str, ...], lut: np.ndarray, classes: list[int], width: int) -> np.ndarray:
    """Colour swatches and names of `classes`, wrapped over as many 20-pixel rows as they need."""
    import cv2

    items, x, row = [], 6, 0
    for c in classes:
        size = cv2.getTextSize(names[c], cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)[0][0] + 26
        if x + size > width:
            x, row = 6, row + 1
        items.append((c, x, row))
        x += size + 8
    strip = np.full((20 * (row + 1) + 4, width, 3), 255, np.uint8)
    for c, x, r in items:
        y = 4 + 20 * r
        strip[y + 2: y + 14, x: x + 16] = lut[c]
        cv2.putText(strip, names[c], (x + 22, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def curves_picture(source_metrics: Path, adapted_metrics: Path, before: Scores, after: Scores,
                   dst: Path) -> Path:
    """Source CE over both runs, the target-side losses of the adaptation, IoU per class before/after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    from mslseg.runtime.atomic import atomic_path

    src, ada = _steps(source_metrics), _steps(adapted_metrics)
    start = src[-1]["iteration"] if src else 0
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.6), gridspec_kw={"width_ratios": [1.1, 1, 1.3]})
    a.plot([r["iteration"] for r in src], [r["loss_source"] for r in src], label="source-only training")
    a.plot([start + r["iteration"] for r in ada], [r["loss_source"] for r in ada], label="during adaptation")
    a.axvline(start, color="grey", lw=0.8, ls="--")
    a.set_yscale("log")
    a.yaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10]))
    a.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    a.yaxis.set_minor_formatter(NullFormatter())
    a.set(xlabel="iteration", title="source cross-entropy (labelled source)")
    a.legend(fontsize=8)
    for key, name in (("loss_target", "IW-MSL target loss"), ("loss_guidance", "multi-level guidance (aux head)")):
        if any(key in r for r in ada):
            b.plot([r["iteration"] for r in ada], [r.get(key, np.nan) for r in ada], label=name)
    b.axhline(0, color="grey", lw=0.6)
    b.set(xlabel="adaptation iteration", title="target losses (unlabelled target)")
    b.legend(fontsize=8)
    keep = [i for i, (x, y) in enumerate(zip(before.iou, after.iou, strict=True)) if x == x or y == y]
    pos = np.arange(len(keep))
    for shift, scores, name in ((-0.2, before, "source only"), (0.2, after, "adapted")):
        c.bar(pos + shift, [100 * np.nan_to_num(scores.iou[i]) for i in keep], 0.4,
              label=f"{name} (mIoU {100 * scores.miou:.1f})")
    c.set_xticks(pos, [before.class_names[i] for i in keep], rotation=45, ha="right", fontsize=8)
    c.set(ylabel="IoU %", title="target val split")
    c.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return dst


def _steps(metrics: Path) -> list[dict]:
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return [r for r in (json.loads(x) for x in lines if x.strip()) if "loss_source" in r]

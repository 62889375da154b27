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
                         index: int = 0, note: str = "") -> Path:
    """Frame `index` of the target val split: the frame, its labels, both models' overlays, a legend.

    `note`: a line under the panel titles (the fast demo says its models are untrained).

    `val` is the DataConfig the demo evaluates on; each model sees the same input as in its
    evaluation (the dataset's resize and normalisation), its labels are shown at the frame's size.
    """
    import cv2
    import torch

    from mslseg.checkpoint import load_model
    from mslseg.data import build_dataset
    from mslseg.runtime.io.atomic import atomic_write_bytes
    from mslseg.runtime.io.viz import legend_strip, overlay, palette_lut

    panels, shown = [], set()
    frame = gt = None
    for ckpt in (source_ckpt, adapted_ckpt):
        model, meta = load_model(ckpt)
        dataset = build_dataset(val, meta.normalization, train=False)
        if frame is None:
            frame, gt, _ = dataset.frames.load(index)  # BGR at the generated size, train ids
            lut = palette_lut(meta, "bgr")
            gt_shown = np.where(gt == 255, 0, gt).astype(np.uint8)
            truth = overlay(frame, gt_shown, lut, 0.55, outline=True)
            panels += [frame, np.where((gt == 255)[..., None], frame // 3, truth)]
            shown.update(np.unique(gt[gt != 255]).tolist())
        with torch.no_grad():
            pred = model(dataset[index]["image"][None]).argmax(1)[0].numpy().astype(np.uint8)
        pred = cv2.resize(pred, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        panels.append(overlay(frame, pred, lut, 0.55, outline=True))
        shown.update(np.unique(pred).tolist())
    h, w = frame.shape[:2]
    legend = legend_strip(sorted(shown), meta.class_names, lut, 4 * w)
    header = np.full((44 if note else 24, 4 * w, 3), 24, np.uint8)  # the legend strip's background
    for i, text in enumerate(_LABELS):
        cv2.putText(header, text, (i * w + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
    if note:
        cv2.putText(header, note, (6, 37), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (80, 200, 255), 1, cv2.LINE_AA)
    picture = np.vstack([header, np.hstack(panels), legend])
    ok, png = cv2.imencode(".png", picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return atomic_write_bytes(dst, png.tobytes())


def curves_picture(source_metrics: Path, adapted_metrics: Path, before: Scores, after: Scores,
                   dst: Path, note: str = "") -> Path:
    """Source CE over both runs, the target-side losses of the adaptation, IoU per class before/after.

    Single points are drawn as markers; a panel without data says so. `note`: a title above all.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mslseg.runtime.io.atomic import atomic_path
    from mslseg.training.plots import draw_series, finish_panel, loss_scale

    src, ada = _steps(source_metrics), _steps(adapted_metrics)
    start = src[-1]["iteration"] if src else 0
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.6), gridspec_kw={"width_ratios": [1.1, 1, 1.3]})
    drawn = draw_series(a, [r["iteration"] for r in src], [r["loss_source"] for r in src],
                        label="source-only training")
    drawn |= draw_series(a, [start + r["iteration"] for r in ada], [r["loss_source"] for r in ada],
                         label="during adaptation")
    if drawn:
        a.axvline(start, color="grey", lw=0.8, ls="--")
        loss_scale(a, [r["loss_source"] for r in (*src, *ada)])
    a.set(xlabel="iteration", title="source cross-entropy (labelled source)")
    finish_panel(a, drawn)
    drawn = False
    for key, name in (("loss_target", "IW-MSL target loss"), ("loss_guidance", "multi-level guidance (aux head)")):
        drawn |= draw_series(b, [r["iteration"] for r in ada], [r.get(key) for r in ada], label=name)
    if drawn:
        b.axhline(0, color="grey", lw=0.6)
    b.set(xlabel="adaptation iteration", title="target losses (unlabelled target)")
    finish_panel(b, drawn)
    keep = [i for i, (x, y) in enumerate(zip(before.iou, after.iou, strict=True)) if x == x or y == y]
    pos = np.arange(len(keep))
    for shift, scores, name in ((-0.2, before, "source only"), (0.2, after, "adapted")):
        if keep:
            c.bar(pos + shift, [100 * np.nan_to_num(scores.iou[i]) for i in keep], 0.4,
                  label=f"{name} (mIoU {100 * scores.miou:.1f})")
    if keep:
        c.set_xticks(pos, [before.class_names[i] for i in keep], rotation=45, ha="right", fontsize=8)
    c.set(ylabel="IoU %", title="target val split")
    finish_panel(c, bool(keep))
    if note:
        fig.suptitle(note, color="tab:red", fontsize=11)
    fig.tight_layout()
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return dst


def _steps(metrics: Path) -> list[dict]:
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return [r for r in (json.loads(x) for x in lines if x.strip()) if "loss_source" in r]

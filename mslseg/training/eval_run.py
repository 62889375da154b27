"""`evaluate_checkpoint`: a checkpoint on a labelled split -> scores.json, confusion.png."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from mslseg.checkpoint import load_checkpoint, model_from_checkpoint
from mslseg.data import build_dataset
from mslseg.data.config import DataConfig
from mslseg.runtime.errors import ConfigError, DataError
from mslseg.runtime.io.atomic import atomic_write_bytes, atomic_write_text, writing
from mslseg.runtime.metadata import ModelMeta, resolve_run_size
from mslseg.runtime.sizes import Size
from mslseg.training.device import resolve_device
from mslseg.training.evaluate import evaluate
from mslseg.training.metrics import Scores


def evaluate_checkpoint(checkpoint: str | Path, data: DataConfig, out: str | Path, *, device: str = "auto",
                        flip: bool = False, save_predictions: bool = False,
                        size: Size | str | None = None, factory: str | None = None) -> Scores:
    """Score `checkpoint` on `data`; write scores.json, confusion.npy/.png (and predictions).

    Where `data` has no `size`, the model runs at `size`: None (default) the model's training size,
    resized as in training (what `mslseg infer` does), "native" each image's own size.
    `factory`: the python:MODULE:FUNCTION that built a checkpoint of the user's own network.
    """
    dev = resolve_device(device)
    raw = load_checkpoint(checkpoint)  # read once: the model and, for the confusion's title, the iteration
    model, meta = model_from_checkpoint(raw, str(checkpoint), factory=factory)
    model = model.to(dev).eval()
    iteration = (raw.get("training") or {}).get("iteration")
    del raw
    data = run_data(data, meta, size)
    dataset = build_dataset(data, meta.normalization, train=False)
    if tuple(dataset.class_names) != tuple(meta.class_names):
        raise ConfigError(
            f"{checkpoint} predicts {meta.num_classes} classes ({', '.join(meta.class_names[:4])}, ...) "
            f"but the data has {len(dataset.class_names)}; choose the matching class set (classes)"
        )
    out = Path(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    palette = np.asarray(meta.palette, np.uint8)[:, ::-1]  # BGR for OpenCV

    def save(batch: dict, pred: torch.Tensor) -> None:
        for name, p in zip(batch["name"], pred.numpy(), strict=True):
            target = out / "predictions" / f"{Path(name).stem}.png"
            with writing(target.parent):
                target.parent.mkdir(parents=True, exist_ok=True)
            # encoded here, not by cv2.imwrite, which reports a full disk as False, not why
            ok, png = cv2.imencode(".png", palette[p])
            if not ok:
                raise DataError(f"cannot encode the prediction for {name} as PNG")
            atomic_write_bytes(target, png.tobytes(), sync=False)

    scores, conf = evaluate(model, dataset, device=dev, num_classes=meta.num_classes,
                            class_names=tuple(meta.class_names), flip=flip,
                            on_batch=save if save_predictions else None)
    ran_at = str(data.size) if data.size else "native"
    scored_at = ran_at if data.size and data.resize_labels else "label resolution"
    report = scores.to_dict() | {"checkpoint": str(checkpoint), "protocol": scores.protocol,
                                 "run_at": ran_at, "scored_at": scored_at,
                                 "flip": flip, "images": len(dataset), "confusion": conf.tolist()}
    atomic_write_text(out / "scores.json", json.dumps(report, indent=2))
    try:
        from mslseg.training.plots import confusion_title, plot_confusion

        split = f"{data.kind} {data.split}" if data.kind in ("cityscapes", "nthu") else f"{data.kind} {Path(data.root).name}"
        plot_confusion(conf.numpy(), tuple(meta.class_names), out / "confusion.png",
                       title=confusion_title(split, checkpoint, iteration, scores.miou))
    except ImportError:
        pass
    return scores


def run_data(data: DataConfig, meta: ModelMeta, size: Size | str | None) -> DataConfig:
    """`data` with the size (and resize method) the model runs at, by the runtime's rule.

    A `size` the data names itself wins (with its own interpolation): the caller chose that protocol.
    """
    if data.size is not None:
        return data
    chosen = resolve_run_size(size, meta)
    if chosen.size is None:
        return data
    return replace(data, size=chosen.size, interpolation=chosen.interpolation)

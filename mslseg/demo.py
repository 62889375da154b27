"""`run_demo`: from nothing to a segmented target-domain video and the proof that adaptation helped.

Every stage calls the code of the real commands: `mslseg synth` (data), `mslseg train` and `mslseg
adapt` (the loop), `mslseg evaluate`, `mslseg export`, `mslseg infer` (the torch-free runtime).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mslseg.runtime.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run: `full()` fits in ~10 min on 2 CPU cores, `fast()` in ~1 min."""

    size: tuple[int, int]  # (width, height) of training and evaluation
    source_images: int
    target_train: int
    target_val: int
    video_frames: int
    source_iterations: int
    adapt_iterations: int

    @classmethod
    def full(cls) -> DemoPlan:
        return cls((128, 64), 300, 200, 60, 90, 500, 250)

    @classmethod
    def fast(cls) -> DemoPlan:
        return cls((64, 32), 16, 8, 4, 8, 6, 4)


@dataclass
class DemoResult:
    before: object  # Scores of the source-only model on the target val split
    after: object  # Scores of the adapted model
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(out: str | Path, plan: DemoPlan, *, overwrite: bool = False,
             say: Callable[[str], None] = log.info) -> DemoResult:
    """Write the whole demo into `out` (see the module docstring); returns the before/after scores."""
    import torch

    from mslseg.data.config import DataConfig
    from mslseg.data.synthetic import write_synthetic_dataset
    from mslseg.export import export_checkpoint
    from mslseg.runtime import Segmenter
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.sources import open_sources
    from mslseg.training.config import load_config
    from mslseg.training.eval_run import evaluate_checkpoint
    from mslseg.training.loop import run

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} is not empty; pass --overwrite to replace an earlier demo, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    w, h = plan.size
    result = DemoResult(None, None)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        result.seconds[stage] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    say(f"1/6 generating the synthetic source (GTA5 layout) and target (Cityscapes layout) domains at {2 * w}x{2 * h}")
    data = out / "data"
    write_synthetic_dataset(data, source=plan.source_images, target_train=plan.target_train,
                            target_val=plan.target_val, size=(2 * w, 2 * h), video_frames=plan.video_frames,
                            seed=0, overwrite=True)
    lap("data")
    base = {"source.root": str(data / "gta5"), "target.root": str(data / "cityscapes"),
            "source.size": [w, h], "target.size": [w, h], "train.log_every": 5}
    say(f"2/6 training source-only for {plan.source_iterations} iterations (ResNet-18 DeepLab-v2)")
    # the runs skip their own end-of-run evaluation: stage 4 scores both checkpoints once
    run(load_config("synthetic", base | {"out": str(out / "source"), "target": None, "target_val": None,
                                         "train.iterations": plan.source_iterations}))
    lap("train")
    say(f"3/6 adapting with IW-MSL + multi-level for {plan.adapt_iterations} iterations")
    run(load_config("synthetic", base | {
        "out": str(out / "adapted"), "model.init": str(out / "source" / "best.pt"),
        "method.target_loss": "iw-msl", "method.multi_level": True, "method.lambda_target": 0.09,
        "train.iterations": plan.adapt_iterations, "target_val": None}))
    lap("adapt")
    say("4/6 evaluating both on the target val split")
    val = DataConfig(kind="cityscapes", root=str(data / "cityscapes"), split="val", size=(w, h))
    result.before = evaluate_checkpoint(out / "source" / "best.pt", val, out / "eval_source", device="cpu")
    result.after = evaluate_checkpoint(out / "adapted" / "best.pt", val, out / "eval_adapted", device="cpu")
    lap("evaluate")
    say("5/6 exporting the adapted model to ONNX (uint8 frames in, labels out)")
    exported = export_checkpoint(out / "adapted" / "best.pt", out / "model.onnx", input_kind="uint8",
                                 output_kind="labels")
    lap("export")
    say("6/6 segmenting the target-domain video with the torch-free runtime")
    sources = open_sources(str(data / "target.mp4"))
    try:
        with Segmenter(exported.onnx, device="cpu", batch_size=4, size=(h, w)) as seg:
            run_infer(sources, seg, InferOptions(out=out / "video", labels="none", areas="csv"))
    finally:
        for src in sources:
            src.close()
    before_after = out / "before_after.png"
    _before_after_picture(out, data, (w, h), before_after)
    lap("infer")
    result.files = {
        "source-only checkpoint": out / "source" / "best.pt",
        "adapted checkpoint": out / "adapted" / "best.pt",
        "training curves": out / "adapted" / "curves.png",
        "scores (json)": out / "eval_adapted" / "scores.json",
        "confusion matrix": out / "eval_adapted" / "confusion.png",
        "ONNX model": exported.onnx,
        "parity report": exported.onnx.with_suffix(".parity.json"),
        "overlay video": out / "video" / "target_overlay.mp4",
        "before/after picture": before_after,
    }
    return result


def _before_after_picture(out: Path, data: Path, size: tuple[int, int], dst: Path) -> Path:
    """A target val frame, its source-only overlay and its adapted overlay, side by side."""
    import cv2
    import torch

    from mslseg.checkpoint import load_model
    from mslseg.runtime.atomic import atomic_write_bytes
    from mslseg.runtime.viz import overlay, palette_lut

    frame_path = sorted((data / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))[0]
    frame = cv2.resize(cv2.imread(str(frame_path)), (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_AREA)
    panels = [frame]
    for name in ("source", "adapted"):
        model, meta = load_model(out / name / "best.pt")
        x = torch.from_numpy(meta.normalization.apply(cv2.resize(frame, size)[None]))
        with torch.no_grad():
            labels = model(x).argmax(1)[0].numpy().astype(np.uint8)
        labels = cv2.resize(labels, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        panels.append(overlay(frame, labels, palette_lut(meta, "bgr"), 0.55))
    picture = np.hstack(panels)
    strip = np.full((22, picture.shape[1], 3), 255, np.uint8)
    for i, text in enumerate(("target frame", "source only", "after IW-MSL + multi-level")):
        cv2.putText(strip, text, (i * frame.shape[1] + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    ok, png = cv2.imencode(".png", np.vstack([strip, picture]))
    return atomic_write_bytes(dst, png.tobytes())

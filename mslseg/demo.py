"""`run_demo`: from nothing to a segmented target-domain video, with scores before and after adaptation.

`DemoPlan.full()` runs long enough for the scores to say what adaptation did; `DemoPlan.fast()`
is a check that every stage runs, and its scores mean nothing (`verdict` says which is which).

Every stage calls the code of the real commands: `mslseg synth` (data), `mslseg train` and `mslseg
adapt` (the loop), `mslseg evaluate`, `mslseg export`, `mslseg infer` (the torch-free runtime).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mslseg.runtime.errors import InputError
from mslseg.runtime.sizes import Size

if TYPE_CHECKING:
    from mslseg.training.metrics import Scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run: `full()` shows what adaptation does, `fast()` only checks the chain."""

    size: Size  # of training and evaluation; the data is generated at twice that
    source_images: int
    target_train: int
    target_val: int
    video_frames: int
    source_iterations: int
    adapt_iterations: int
    takes: str  # how long it runs: the one figure the CLI help and the demo itself state
    measures_adaptation: bool = True  # False: too few iterations for the scores to mean anything

    @classmethod
    def full(cls) -> DemoPlan:
        return cls(Size(128, 64), 300, 200, 60, 90, 500, 250, takes="about 8 minutes on 2 CPU cores")

    @classmethod
    def fast(cls) -> DemoPlan:
        return cls(Size(64, 32), 16, 8, 4, 8, 6, 4, takes="about a minute on 2 CPU cores",
                   measures_adaptation=False)


@dataclass
class DemoResult:
    before: Scores | None  # the source-only model on the target val split
    after: Scores | None  # the adapted model on the same split
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(out: str | Path, plan: DemoPlan, *, overwrite: bool = False,
             say: Callable[[str], None] = log.info,
             progress: Callable[[str], AbstractContextManager[Any]] | None = None) -> DemoResult:
    """Write the whole demo into `out` (see the module docstring); returns the before/after scores.

    `progress(name)`, when given, is entered around each training run and gets its `on_start` and
    `on_step` (the CLI's start line and progress bar or plain lines).
    """
    from mslseg.data.config import DataConfig
    from mslseg.data.synthetic import write_synthetic_dataset
    from mslseg.demo_pictures import before_after_picture, curves_picture
    from mslseg.export import export_checkpoint
    from mslseg.runtime import Segmenter
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.io.sources import open_sources
    from mslseg.training.config import load_config
    from mslseg.training.eval_run import evaluate_checkpoint
    from mslseg.training.loop import run

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} is not empty; pass --overwrite to replace an earlier demo, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    w, h = plan.size.width, plan.size.height
    result = DemoResult(None, None)
    clock = time.perf_counter()

    def train(name: str, cfg: Any) -> None:
        if progress is None:
            run(cfg)
            return
        with progress(name) as shown:
            run(cfg, on_start=shown.on_start, on_step=shown.on_step)

    def lap(stage: str) -> None:
        nonlocal clock
        result.seconds[stage] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    say(f"{'chain check (--fast)' if not plan.measures_adaptation else 'demo'}: {plan.takes}")
    say(f"1/6 generating the synthetic source (GTA5 layout) and target (Cityscapes layout) domains at {2 * w}x{2 * h}")
    data = out / "data"
    write_synthetic_dataset(data, source=plan.source_images, target_train=plan.target_train,
                            target_val=plan.target_val, size=Size(2 * w, 2 * h), video_frames=plan.video_frames,
                            seed=0, overwrite=True)
    lap("data")
    base = {"source.root": str(data / "gta5"), "target.root": str(data / "cityscapes"),
            "source.size": [w, h], "target.size": [w, h], "train.log_every": 5}
    say(f"2/6 training source-only for {plan.source_iterations} iterations (ResNet-18 DeepLab-v2)")
    # the runs skip their own end-of-run evaluation: stage 4 scores both checkpoints once
    train("train", load_config("synthetic", base | {"out": str(out / "source"), "target": None,
                                                   "target_val": None, "train.iterations": plan.source_iterations}))
    lap("train")
    say(f"3/6 adapting with IW-MSL + multi-level for {plan.adapt_iterations} iterations")
    train("adapt", load_config("synthetic", base | {
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
        with Segmenter(exported.onnx, device="cpu", batch_size=4, size=plan.size) as seg:
            run_infer(sources, seg, InferOptions(out=out / "video", labels="none", areas="csv"))
    finally:
        for src in sources:
            src.close()
    lap("infer")
    say("pictures: an overlay before/after adaptation, and the curves of both runs")
    note = "" if plan.measures_adaptation else "chain check (--fast): untrained models, not a measure of adaptation"
    before_after = before_after_picture(out / "source" / "best.pt", out / "adapted" / "best.pt", val,
                                        out / "before_after.png", note=note)
    curves = curves_picture(out / "source" / "metrics.jsonl", out / "adapted" / "metrics.jsonl", result.before,
                            result.after, out / "curves.png", note=note)
    lap("pictures")
    result.files = {
        "source-only checkpoint": out / "source" / "best.pt",
        "adapted checkpoint": out / "adapted" / "best.pt",
        "training curves": curves,
        "scores (json)": out / "eval_adapted" / "scores.json",
        "confusion matrix": out / "eval_adapted" / "confusion.png",
        "ONNX model": exported.onnx,
        "parity report": exported.onnx.with_suffix(".parity.json"),
        "overlay video": out / "video" / "target_overlay.mp4",
        "before/after picture": before_after,
    }
    return result


def verdict(result: DemoResult, plan: DemoPlan) -> str:
    """What the scores of a finished demo say, in one sentence, and no more than they say."""
    if not plan.measures_adaptation:
        return (f"Chain check: every stage ran. {plan.source_iterations} + {plan.adapt_iterations} iterations "
                "train nothing, so this does not measure adaptation; run without --fast for the "
                "before/after table.")
    before, after = 100 * result.before.miou, 100 * result.after.miou
    if after > before:
        return (f"Adaptation gained {after - before:.1f} mIoU points on the target val split; on runs "
                "this short most of it comes from BatchNorm statistics on target images (README, "
                "\"Does adaptation help?\").")
    return (f"Adaptation did not gain on this run ({before:.2f} -> {after:.2f} mIoU); the README's "
            "\"Does adaptation help?\" shows what each part contributes and when.")

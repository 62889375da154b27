"""The model table: SegFormer-B0/B1 against DeepLab-v2 ResNet-18/101, GFLOPs and CPU ms per frame,
ONNX fp32 and int8.

    python benchmarks/models.py                                   # everything, ~15 min on 2 cores
    python benchmarks/models.py --models segformer-b0,deeplabv2-r18 --sizes 512x256
    python benchmarks/models.py --torch                           # also PyTorch eager rows (slower)

Each model is built with random weights and 19 (Cityscapes) classes, single-level (what export
keeps): inference speed does not depend on the weights' values, so no training or download is
needed. It is saved as a checkpoint and exported as `mslseg export` would (uint8 BGR frames in,
labels out): fp32, and int8 in the CPU layout, calibrated (minmax) on a few synthetic frames.
The int8 parity gate is lowered to 1%: a random network's label agreement says nothing about a
trained one's; the agreement is recorded in the results, not judged. The models' training size
is 512x256 (it sets the calibration and parity frames only; timing runs each size natively).
Exports go to --work and are reused by a rerun unless --rebuild (--export-only stops after them).

Then `mslseg.runtime.bench.harness.bench_models` times each model's files at each size (batch 1,
1 warm-up, --repeats timed runs, median; no pipeline check) on the CPU. ms/frame is the wall time
of `Segmenter.segment` on one frame (host preprocessing and label resizing included, as a
user's loop sees it); GFLOPs are counted from the fp32 graph (mslseg.runtime.bench.flops). Prints one
Markdown table with the CPU line, and writes the table, the raw rows and the machine to
--results (benchmarks/models_results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODELS = {  # name -> (model.arch, model.backbone: DeepLab-v2's only)
    "segformer-b0": ("segformer-b0", "resnet101"),
    "segformer-b1": ("segformer-b1", "resnet101"),
    "deeplabv2-r18": ("deeplabv2", "resnet18"),
    "deeplabv2-r101": ("deeplabv2", "resnet101"),
}
TRAIN_SIZE = "512x256"
INT8_GATE = 0.01  # random weights: agreement is recorded, not judged (see the module doc)


def prepare(name: str, work: Path, calib: Path, calib_frames: int, rebuild: bool) -> dict:
    """Checkpoint, fp32 and int8 exports of `name` in `work` (reused unless `rebuild`); its facts."""
    import torch

    from mslseg.checkpoint import save_checkpoint
    from mslseg.classes import CITYSCAPES_CLASSES
    from mslseg.export.export_job import export_checkpoint
    from mslseg.export.parity import report_path
    from mslseg.runtime.sizes import Size
    from mslseg.training.config import ModelConfig
    from mslseg.training.loop import build_model

    arch, backbone = MODELS[name]
    torch.manual_seed(0)
    model, meta = build_model(ModelConfig(arch=arch, backbone=backbone, multi_level=False),
                              CITYSCAPES_CLASSES, Size.parse(TRAIN_SIZE))
    params = sum(p.numel() for p in model.parameters())
    files = {"pt": work / f"{name}.pt", "fp32": work / f"{name}.onnx", "int8": work / f"{name}.int8.onnx"}
    if rebuild or not files["pt"].exists():
        save_checkpoint(files["pt"], model, meta)
    for precision in ("fp32", "int8"):
        if not rebuild and files[precision].exists():
            continue
        t0 = time.perf_counter()
        int8 = precision == "int8"
        export_checkpoint(files["pt"], files[precision], input_kind="uint8", output_kind="labels",
                          precision=precision, calib=[calib] if int8 else None, calib_frames=calib_frames,
                          int8_layout="cpu", gate=INT8_GATE if int8 else None)
        print(f"  exported {files[precision].name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    parity = json.loads(report_path(files["int8"]).read_text())
    return {"arch": arch, "backbone": backbone if arch == "deeplabv2" else None, "params_m": round(params / 1e6, 2),
            "files": {k: str(v) for k, v in files.items()},
            "int8_parity_agreement": round(parity["label_agreement"], 4)}


def measure(names: list[str], facts: dict, sizes: list, args: argparse.Namespace) -> tuple[list, dict]:
    """bench_models on each model's files; (rows as dicts, the machine)."""
    from mslseg.runtime.bench.harness import bench_models

    rows, machine = [], {}
    for name in names:
        kinds = ["fp32", "int8"] + (["pt"] if args.torch else [])
        files = [Path(facts[name]["files"][k]) for k in kinds]

        def on_row(r, name=name) -> None:
            print(f"  {name} {r.variant} {r.size}: {r.ms:.1f} ms", file=sys.stderr, flush=True)

        report = bench_models(files, batch_sizes=[1], sizes=sizes, warmup=args.warmup, repeats=args.repeats, device="cpu",
                              threads=args.threads, torch_fast=False, pipeline_frames=0, on_row=on_row)
        machine = report.machine
        for kind, path in zip(kinds, files, strict=True):
            rows += [{**r.to_dict(), "name": name, "kind": kind} for r in report.rows if r.model.split(" (")[0] == path.name]
    return rows, machine


def table(names: list[str], sizes: list, facts: dict, rows: list, torch_rows: bool) -> list[dict]:
    """One line per model and size: GFLOPs, params, fp32/int8 (/torch) ms per frame, int8 speed-up."""
    lines = []
    for size in sizes:
        for name in names:
            by = {r["kind"]: r for r in rows if r["name"] == name and r["size"] == str(size)}
            fp32, int8 = by["fp32"]["ms"], by["int8"]["ms"]
            line = {"model": name, "WxH": str(size), "GFLOPs": by["fp32"]["gflops"],
                    "params (M)": facts[name]["params_m"], "fp32 ms/frame": fp32, "int8 ms/frame": int8,
                    "int8 speed-up": round(fp32 / int8, 2)}
            if torch_rows:
                line["PyTorch ms/frame"] = by["pt"]["ms"]
            lines.append(line)
    return lines


def markdown(lines: list[dict]) -> str:
    cols = list(lines[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
    for line in lines:
        cells = [("" if v is None else f"{v:.1f}" if isinstance(v, float) and k.endswith("ms/frame") else
                  f"{v:.2f}x" if k == "int8 speed-up" else str(v)) for k, v in line.items()]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    ap.add_argument("--sizes", default="512x256,1024x512", help="comma-separated WIDTHxHEIGHT")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per row (the median is reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per row before timing")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: one per core)")
    ap.add_argument("--torch", action="store_true", help="also time the PyTorch checkpoints (eager fp32)")
    ap.add_argument("--calib-frames", type=int, default=8, help="synthetic int8 calibration frames")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-models"), help="checkpoints and exports")
    ap.add_argument("--rebuild", action="store_true", help="export again even where the files exist")
    ap.add_argument("--export-only", action="store_true",
                    help="write the checkpoints and exports, time nothing (export on a busy machine, time later)")
    ap.add_argument("--results", type=Path, default=Path(__file__).with_name("models_results.json"))
    args = ap.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        ap.error(f"unknown model(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(MODELS)}")

    import cv2
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from mslseg.export.calibration import synthetic_frames
    from mslseg.runtime.bench.harness import describe_cpu
    from mslseg.runtime.errors import MslsegError
    from mslseg.runtime.io.atomic import atomic_write_text
    from mslseg.runtime.sizes import Size

    try:
        sizes = [Size.parse(s.strip()) for s in args.sizes.split(",") if s.strip()]
    except MslsegError as exc:
        ap.error(str(exc))
    start = time.perf_counter()
    calib = args.work / "calib"
    calib.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(synthetic_frames(args.calib_frames + 2, TRAIN_SIZE, seed=7)):
        cv2.imwrite(str(calib / f"{i:03d}.png"), frame)
    facts = {}
    for name in names:
        print(f"{name}: checkpoint and exports in {args.work}", file=sys.stderr, flush=True)
        facts[name] = prepare(name, args.work, calib, args.calib_frames, args.rebuild)
    if args.export_only:
        print(f"exported {', '.join(names)} in {(time.perf_counter() - start) / 60:.1f} min", file=sys.stderr)
        return
    rows, machine = measure(names, facts, sizes, args)
    lines = table(names, sizes, facts, rows, args.torch)
    wall = time.perf_counter() - start
    cpu = describe_cpu(machine)
    print(markdown(lines))
    print(f"\n{cpu}; ONNX Runtime threads: {args.threads or 'one per core'}; batch 1, median of {args.repeats}")
    results = {"command": " ".join(["python", *sys.argv]), "wall_s": round(wall, 1), "cpu": cpu,
               "machine": machine, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "models": facts,
               "table": lines, "rows": rows}
    atomic_write_text(args.results, json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.results} ({wall / 60:.1f} min)", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The method table: source-only, BN-only, MinEnt, MSL, IW-MSL, IW-MSL + multi-level, on the
synthetic two-domain data, same iterations for every method, scored on the target val split.

    python benchmarks/methods.py --out runs/methods            # ~10 min on 2 CPU cores
    python benchmarks/methods.py --out runs/methods --lambdas 0.1 0.5 2.0   # lambda_T sweep
    python benchmarks/methods.py --model segformer-b0 --out runs/methods-sf  # another architecture

Prints one Markdown table (target mIoU and per-class IoU) and writes it to OUT/table.md and
OUT/results.json. Reports what it measures, including where a method does not beat BN-only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

METHODS = [  # (row name, target loss, multi-level, needs target images)
    ("BN-only", "none", False),
    ("MinEnt", "minent", False),
    ("MSL", "msl", False),
    ("IW-MSL", "iw-msl", False),
    ("IW-MSL + multi", "iw-msl", True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deeplabv2",
                    help="model.arch: deeplabv2 (the synthetic config's ResNet-18 DeepLab-v2), segformer-b0, ...")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default runs/methods, or runs/methods-MODEL for another model)")
    ap.add_argument("--data", type=Path, default=None, help="synthetic data root (generated if missing)")
    ap.add_argument("--size", default="128x64")
    ap.add_argument("--source-iters", type=int, default=600)
    ap.add_argument("--adapt-iters", type=int, default=300)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.1])
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    if args.out is None:
        args.out = Path("runs/methods" if args.model == "deeplabv2" else f"runs/methods-{args.model}")

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from mslseg.data.config import DataConfig
    from mslseg.data.synthetic import write_cityscapes_layout, write_gta5_layout
    from mslseg.runtime.sizes import Size
    from mslseg.training.config import load_config
    from mslseg.training.eval_run import evaluate_checkpoint
    from mslseg.training.loop import run

    data = args.data or args.out / "data"
    size = Size.parse(args.size)
    w, h = size.width, size.height
    if not (data / "gta5").exists():
        write_gta5_layout(data / "gta5", 400, Size(2 * w, 2 * h), seed=args.seed)
        write_cityscapes_layout(data / "cityscapes", 300, 100, Size(2 * w, 2 * h), seed=args.seed + 1)
    base = {"source.root": str(data / "gta5"), "target.root": str(data / "cityscapes"),
            "target_val.root": str(data / "cityscapes"), "train.seed": args.seed,
            "source.size": [w, h], "target.size": [w, h], "target_val.size": [w, h]}
    if args.model != "deeplabv2":  # the DeepLab path passes no override: exactly the synthetic config
        base["model.arch"] = args.model
    val = DataConfig(kind="cityscapes", root=str(data / "cityscapes"), split="val", size=(w, h))
    rows, timings = [], {}

    source_dir = args.out / "source"
    if not (source_dir / "best.pt").exists():
        t = time.perf_counter()
        cfg = load_config("synthetic", base | {"out": str(source_dir), "target": None,
                                               "train.iterations": args.source_iters, "train.eval_every": 0})
        run(cfg)
        timings["source"] = time.perf_counter() - t
    scores = evaluate_checkpoint(source_dir / "best.pt", val, source_dir / "eval", device="cpu")
    rows.append(("source only", "-", scores))
    print(f"source only: mIoU {100 * scores.miou:.2f}", flush=True)

    for lam in args.lambdas:
        for name, loss, multi in METHODS:
            if loss == "none" and lam != args.lambdas[0]:
                continue
            run_dir = args.out / f"{name.replace(' ', '').replace('+', '_')}-l{lam}"
            if not (run_dir / "best.pt").exists():
                t = time.perf_counter()
                cfg = load_config("synthetic", base | {
                    "out": str(run_dir), "model.init": str(source_dir / "best.pt"),
                    "method.target_loss": loss, "method.multi_level": multi,
                    "method.lambda_target": lam * (0.9 if multi else 1.0),
                    "train.iterations": args.adapt_iters, "train.eval_every": 0,
                })
                run(cfg)
                timings[run_dir.name] = time.perf_counter() - t
            scores = evaluate_checkpoint(run_dir / "best.pt", val, run_dir / "eval", device="cpu")
            rows.append((name, "-" if loss == "none" else f"{lam:g}", scores))
            print(f"{name} (lambda {lam:g}): mIoU {100 * scores.miou:.2f}", flush=True)

    names = rows[0][2].class_names
    present = [i for i, v in enumerate(rows[0][2].iou) if v == v]
    header = "| method | lambda_T | mIoU | " + " | ".join(names[i] for i in present) + " |"
    lines = [header, "|" + "---|" * (3 + len(present))]
    for name, lam, s in rows:
        cells = " | ".join(f"{100 * s.iou[i]:.1f}" for i in present)
        lines.append(f"| {name} | {lam} | **{100 * s.miou:.2f}** | {cells} |")
    table = "\n".join(lines)
    print(f"model: {args.model}")
    print(table)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"model": args.model, "rows": [{"method": n, "lambda_target": lam, **s.to_dict()} for n, lam, s in rows],
         "seconds": timings, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))


if __name__ == "__main__":
    main()

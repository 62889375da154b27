"""The method table: source-only, BN-only, MinEnt, MSL, IW-MSL, IW-MSL + multi-level and the
self-training family (DACS, DAFormer, MIC, IW-MSL + DAFormer) on the synthetic two-domain data, same
iterations for every method, every adaptation repeated with several seeds, scored on the target
val split.

    python benchmarks/methods.py --out runs/methods            # all rows, 3 seeds: ~1.5 h on 2 CPU cores
    python benchmarks/methods.py --rows BN-only "IW-MSL + multi" DAFormer MIC --seeds 1 2 3
    python benchmarks/methods.py --out runs/methods --lambdas 0.1 0.5 2.0 --rows MSL IW-MSL   # lambda_T sweep
    python benchmarks/methods.py --model segformer-b0 --out runs/methods-sf  # another architecture

One source-only model (the first seed) is adapted by every row with each seed; the seed drives the
target sampling, augmentation, mixing and masks. Prints one Markdown table (target mIoU mean +- std
over the seeds, per-class IoU means, seconds per iteration) and writes OUT/table.md,
OUT/results.json and OUT/per_class.png (per-class IoU of source / BN-only / IW-MSL + multi / the
best self-training row). A difference inside the spread is no difference.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

METHODS = [  # (row name, method (mslseg.methods), multi-level)
    ("BN-only", "none", False),
    ("MinEnt", "minent", False),
    ("MSL", "msl", False),
    ("IW-MSL", "iw-msl", False),
    ("IW-MSL + multi", "iw-msl", True),
    ("DACS", "dacs", True),
    ("DAFormer", "daformer", True),
    ("MIC", "mic", True),
    ("IW-MSL + DAFormer", "iw-msl+daformer", True),
]
SELF_TRAINING = ("DACS", "DAFormer", "MIC", "IW-MSL + DAFormer")


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
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.1],
                    help="lambda_T of the rows with a target loss (self-training rows: only the first)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1234, 1235, 1236],
                    help="adaptation seeds; the first also trains the source model and writes the data")
    ap.add_argument("--rows", nargs="+", default=[name for name, _, _ in METHODS],
                    choices=[name for name, _, _ in METHODS], metavar="ROW",
                    help="rows to run: " + ", ".join(name for name, _, _ in METHODS))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every adaptation run (e.g. method.teacher_alpha=0.99)")
    args = ap.parse_args()
    if args.out is None:
        args.out = Path("runs/methods" if args.model == "deeplabv2" else f"runs/methods-{args.model}")

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from mslseg.data.config import DataConfig
    from mslseg.data.synthetic import write_cityscapes_layout, write_gta5_layout
    from mslseg.runtime.sizes import Size
    from mslseg.training.config import load_config, parse_override
    from mslseg.training.eval_run import evaluate_checkpoint
    from mslseg.training.loop import run

    data = args.data or args.out / "data"
    size = Size.parse(args.size)
    w, h = size.width, size.height
    if not (data / "gta5").exists():
        write_gta5_layout(data / "gta5", 400, Size(2 * w, 2 * h), seed=args.seeds[0])
        write_cityscapes_layout(data / "cityscapes", 300, 100, Size(2 * w, 2 * h), seed=args.seeds[0] + 1)
    base = {"source.root": str(data / "gta5"), "target.root": str(data / "cityscapes"),
            "target_val.root": str(data / "cityscapes"), "train.seed": args.seeds[0],
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
    rows.append({"method": "source only", "lambda_target": "-", "scores": [scores], "seconds_per_it": None})
    print(f"source only: mIoU {100 * scores.miou:.2f}", flush=True)
    extra = dict(parse_override(item) for item in args.sets)

    for lam in args.lambdas:
        for name, method, multi in METHODS:
            if name not in args.rows or ((method == "none" or name in SELF_TRAINING) and lam != args.lambdas[0]):
                continue
            has_lambda = method != "none" and name not in ("DACS", "DAFormer", "MIC")
            row = {"method": name, "lambda_target": f"{lam:g}" if has_lambda else "-", "scores": [],
                   "seconds": []}
            for seed in args.seeds:
                run_dir = args.out / f"{name.replace(' ', '').replace('+', '_')}-l{lam}-s{seed}"
                if not (run_dir / "best.pt").exists():
                    t = time.perf_counter()
                    cfg = load_config("synthetic", base | {
                        "out": str(run_dir), "model.init": str(source_dir / "best.pt"), "train.seed": seed,
                        "method.target_loss": method, "method.multi_level": multi,
                        "method.lambda_target": lam * (0.9 if multi else 1.0),
                        "train.iterations": args.adapt_iters, "train.eval_every": 0,
                    } | extra)
                    run(cfg)
                    (run_dir / "seconds.txt").write_text(f"{time.perf_counter() - t:.1f}\n")
                scores = evaluate_checkpoint(run_dir / "best.pt", val, run_dir / "eval", device="cpu")
                row["scores"].append(scores)
                row["seconds"].append(float((run_dir / "seconds.txt").read_text()))
                print(f"{name} (lambda {lam:g}, seed {seed}): mIoU {100 * scores.miou:.2f}", flush=True)
            row["seconds_per_it"] = sum(row.pop("seconds")) / len(args.seeds) / args.adapt_iters
            rows.append(row)

    names = rows[0]["scores"][0].class_names
    present = [i for i, v in enumerate(rows[0]["scores"][0].iou) if v == v]
    header = ("| method | lambda_T | mIoU (mean ± std) | s/it | " + " | ".join(names[i] for i in present) + " |")
    lines = [header, "|" + "---|" * (4 + len(present))]
    for row in rows:
        mious = np.array([100 * s.miou for s in row["scores"]])
        ious = np.nanmean(np.array([[100 * s.iou[i] for i in present] for s in row["scores"]]), axis=0)
        row["miou_mean"], row["miou_std"] = float(mious.mean()), float(mious.std(ddof=1)) if len(mious) > 1 else 0.0
        spread = f" ± {row['miou_std']:.2f}" if len(mious) > 1 else ""
        per_it = f"{row['seconds_per_it']:.2f}" if row["seconds_per_it"] is not None else "-"
        cells = " | ".join(f"{v:.1f}" for v in ious)
        lines.append(f"| {row['method']} | {row['lambda_target']} | **{row['miou_mean']:.2f}**{spread} | {per_it} | {cells} |")
        row["iou_mean"] = {names[i]: float(v) for i, v in zip(present, ious, strict=True)}
    table = "\n".join(lines)
    print(f"model: {args.model}; adaptation seeds {', '.join(map(str, args.seeds))} (n = {len(args.seeds)})")
    print(table)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"model": args.model, "seeds": args.seeds,
         "rows": [{k: v for k, v in r.items() if k != "scores"} | {"runs": [s.to_dict() for s in r["scores"]]}
                  for r in rows],
         "seconds": timings, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    _per_class_picture(rows, [names[i] for i in present], args.out / "per_class.png", args.model)


def _per_class_picture(rows: list[dict], names: list[str], path: Path, model: str) -> None:
    """Per-class IoU of source only, BN-only, IW-MSL + multi and the best self-training row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["method"]: r for r in rows}
    st = [r for r in rows if r["method"] in SELF_TRAINING]
    chosen = [by[n] for n in ("source only", "BN-only", "IW-MSL + multi") if n in by]
    if st:
        chosen.append(max(st, key=lambda r: r["miou_mean"]))
    if len(chosen) < 2:
        return
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / len(chosen)
    for k, row in enumerate(chosen):
        xs = [i + (k - (len(chosen) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [row["iou_mean"][n] for n in names], width,
               label=f"{row['method']} ({row['miou_mean']:.1f} mIoU)")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("IoU (%), mean over seeds")
    ax.set_title(f"per-class IoU on the synthetic target ({model})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Which label-free signal tells a good adapted model from a bad one? Validated on labelled runs.

    python benchmarks/label_free.py runs/methods [runs/methods-sf ...] --out runs/label-free

Takes the run folders of `benchmarks/methods.py` (each run's best.pt with its eval/scores.json, and
the table's source/best.pt as the reference). For every run it measures the label-free signals
(mslseg.training.label_free) on held-out target frames that no run trained on (a fresh draw of the
synthetic target domain, read without labels), then, per candidate score and per table: the
Spearman correlation with the true target mIoU and the regret of its pick (the true mIoU of the
best run minus that of the run the score picks). The collapse check (classes vanishing against
the source model's shares) is reported per run. Prints and writes OUT/table.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from mslseg.label_free_scores import LABEL_FREE_SCORES

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# candidate scores: (name, key for Signals.score, sign); the registry's, and the source agreement both ways
CANDIDATES = [(key, key, 1) for key in LABEL_FREE_SCORES] + [
    ("agreement with source", "agreement", 1), ("disagreement with source", "agreement", -1)]


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _ranks(np.asarray(a)), _ranks(np.asarray(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = x.argsort(kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # ties share their mean rank
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", type=Path, nargs="+", help="output folders of benchmarks/methods.py")
    ap.add_argument("--out", type=Path, default=Path("runs/label-free"))
    ap.add_argument("--frames", type=int, default=64, help="held-out target frames")
    ap.add_argument("--source-frames", type=int, default=32, help="labelled source frames for ATC")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from mslseg.checkpoint import load_checkpoint, model_from_checkpoint
    from mslseg.data import build_dataset
    from mslseg.data.config import DataConfig
    from mslseg.data.synthetic import write_cityscapes_layout
    from mslseg.runtime.sizes import Size
    from mslseg.training.label_free import measure, source_fit
    from mslseg.training.label_free_run import describe_collapse

    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    report: dict = {"tables": {}}
    lines = []
    for table in args.tables:
        source_ckpt = table / "source" / "best.pt"
        runs = sorted(p.parent for p in table.glob("*/best.pt") if (p.parent / "eval" / "scores.json").is_file())
        if not runs:
            raise SystemExit(f"{table} holds no scored runs (RUN/best.pt with RUN/eval/scores.json)")
        src_model, meta = model_from_checkpoint(load_checkpoint(source_ckpt), str(source_ckpt))
        size = meta.train_size or Size(128, 64)
        held = args.out / "heldout"
        if not (held / "leftImg8bit").exists():
            write_cityscapes_layout(held, 1, args.frames, Size(2 * size.width, 2 * size.height), seed=4242)
        frames = build_dataset(DataConfig(kind="cityscapes", root=str(held), split="val", labelled=False,
                                          size=size), meta.normalization, train=False)
        images = [torch.stack([frames[i]["image"] for i in range(k, min(k + 8, len(frames)))])
                  for k in range(0, len(frames), 8)]
        cfg = json.loads(json.dumps(__import__("yaml").safe_load((runs[0] / "config.yaml").read_text())))
        src = build_dataset(DataConfig(kind=cfg["source"]["kind"], root=cfg["source"]["root"], size=size),
                            meta.normalization, train=False)
        labelled = [(torch.stack([src[i]["image"] for i in range(k, k + 8)]),
                     torch.stack([src[i]["label"] for i in range(k, k + 8)]))
                    for k in range(0, min(args.source_frames, len(src)) - 7, 8)]
        reference = measure(src_model, images, meta.num_classes, device=device)
        rows = []
        names = tuple(meta.class_names)
        for run in runs:  # the source model's own run among them
            model, _ = model_from_checkpoint(load_checkpoint(run / "best.pt"), str(run / "best.pt"))
            fit = source_fit(model, labelled, device=device)
            s = measure(model, images, meta.num_classes, device=device, reference=reference.class_share,
                        other=src_model, atc_threshold=fit.threshold)
            s.source_accuracy = fit.accuracy
            scores = json.loads((run / "eval" / "scores.json").read_text())
            truth = scores["miou"]
            collapsed = describe_collapse(s, reference, names) if run.name != "source" else None
            rows.append({"run": run.name, "miou": truth, "pixel_acc": scores.get("pixel_acc"),
                         "collapse": collapsed, **s.to_dict()})
            print(f"{table.name}/{run.name}: mIoU {100 * truth:.2f}  conf {s.confidence:.3f}  ent {s.entropy:.3f}  "
                  f"im {s.im:.3f}  flip {s.flip_agreement:.3f}  cw-conf {s.class_confidence:.3f}  atc {s.atc:.3f} "
                  f"(true pixel acc {scores.get('pixel_acc', float('nan')):.3f})  collapse: {collapsed}", flush=True)
        truth = [r["miou"] for r in rows]
        best = max(truth)
        # the same run with another seed is the same choice: per configuration (a run's name without
        # its -sSEED), the mean of the score and of the truth over the seeds
        configs = sorted({r["run"].rsplit("-s", 1)[0] for r in rows})
        members = {c: [r for r in rows if r["run"].rsplit("-s", 1)[0] == c] for c in configs}
        config_truth = [float(np.mean([r["miou"] for r in members[c]])) for c in configs]
        scored = []
        for name, key, sign in CANDIDATES:
            values = [sign * (-r["entropy"] if key == "neg_entropy" else r[key]) for r in rows]
            pick = int(np.argmax(values))
            by_config = [float(np.mean([sign * (-r["entropy"] if key == "neg_entropy" else r[key]) for r in members[c]]))
                         for c in configs]
            cpick = int(np.argmax(by_config))
            scored.append({"score": name, "spearman": spearman(values, truth),
                           "regret": 100 * (best - truth[pick]), "picked": rows[pick]["run"],
                           "spearman_configs": spearman(by_config, config_truth),
                           "regret_configs": 100 * (max(config_truth) - config_truth[cpick]),
                           "picked_config": configs[cpick]})
        report["tables"][str(table)] = {"runs": rows, "scores": scored}
        atc_err = [abs(r["atc"] - r["pixel_acc"]) for r in rows if r.get("pixel_acc") is not None]
        flagged = ", ".join(f"{r['run']} ({100 * r['miou']:.1f})" for r in rows if r["collapse"]) or "none"
        atc_words = (f"; ATC's estimate of the pixel accuracy is off by {100 * float(np.mean(atc_err)):.1f} points on "
                     f"average (max {100 * float(np.max(atc_err)):.1f})" if atc_err else "")
        lines += [f"### {table}", "", f"{len(rows)} runs (source only included); true mIoU "
                  f"{100 * min(truth):.1f} to {100 * best:.1f}; flagged as collapsed (mIoU): {flagged}{atc_words}", "",
                  f"Per run ({len(rows)}), and per configuration ({len(configs)}: method and lambda, scores and "
                  "mIoU averaged over its seeds):", "",
                  "| label-free score | Spearman, runs | regret of its pick, runs (mIoU) | Spearman, configurations "
                  "| regret, configurations | picked configuration |", "|---|---|---|---|---|---|"]
        lines += [f"| {s['score']} | {s['spearman']:.2f} | {s['regret']:.2f} | {s['spearman_configs']:.2f} | "
                  f"{s['regret_configs']:.2f} | {s['picked_config']} |" for s in scored]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

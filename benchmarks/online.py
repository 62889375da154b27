"""Online adaptation on a drifting drive: static model vs adapting ones, mIoU per segment and over time.

    mslseg synth data/drift --drift-frames 2000 --no-video --source 1 --target-train 1 --target-val 0
    python benchmarks/online.py runs/synth-source/best.pt data/drift/drift.json --out runs/online

Every variant starts from the same checkpoint and segments the frames of the drift video in order
(batches of `--batch` frames, at the model's training size); predictions are scored against the
per-frame labels at their resolution. Variants (mslseg.training.online): static (BatchNorm's
running statistics, no update), BatchNorm on each batch's statistics without updates, TENT (entropy, norm parameters), MSL, IW-MSL, MSL + mean teacher
and stochastic restore (CoTTA's guards), each with the collapse guard unless --no-guard. Prints a
table of mIoU per segment (%), the resets and the ms per frame; writes OUT/table.md,
OUT/results.json and OUT/online.png (mIoU over a sliding window of frames, segments shaded).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

VARIANTS = {  # name -> OnlineConfig fields (None: static)
    "static": None,
    "BN statistics only": {"objective": "none"},
    "TENT (entropy)": {"objective": "entropy"},
    "MSL": {"objective": "msl"},
    "IW-MSL": {"objective": "iw-msl"},
    "MSL + teacher + restore": {"objective": "msl", "teacher_alpha": 0.999, "restore": 0.01},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("drift", type=Path, help="drift.json of `mslseg synth --drift-frames`")
    ap.add_argument("--out", type=Path, default=Path("runs/online"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--no-guard", action="store_true")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="NAME")
    ap.add_argument("--smooth", type=int, default=50, help="frames in the sliding window of the plot")
    ap.add_argument("--include", type=Path, nargs="*", default=[], metavar="RESULTS",
                    help="results.json of earlier runs on the same drive: their variants join the table and plot")
    args = ap.parse_args()

    import cv2
    import torch

    from mslseg.checkpoint import load_checkpoint, model_from_checkpoint
    from mslseg.data.labels import cityscapes_codec
    from mslseg.runtime.sizes import resize_frame
    from mslseg.training.metrics import confusion_matrix, scores_from_confusion
    from mslseg.training.online import OnlineAdapter, OnlineConfig

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    info = json.loads(args.drift.read_text())
    root = args.drift.parent
    cap = cv2.VideoCapture(str(root / info["video"]))
    frames = []
    while (read := cap.read())[0]:
        frames.append(read[1])
    cap.release()
    raw = load_checkpoint(args.checkpoint)
    _, meta = model_from_checkpoint(raw, str(args.checkpoint))
    names = tuple(meta.class_names)
    codec = cityscapes_codec(names)
    labels_dir = root / info["labels"]
    labels = [codec.decode(cv2.imread(str(labels_dir / f"{k:06d}.png"), cv2.IMREAD_UNCHANGED), labels_dir)
              for k in range(len(frames))]
    norm = meta.normalization
    size = meta.train_size

    def tensor(batch: list[np.ndarray]) -> torch.Tensor:
        x = np.stack([resize_frame(f, size, meta.interpolation) if size else f for f in batch]).astype(np.float32)
        if norm.order == "rgb":
            x = x[..., ::-1]
        x = (x - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)

    segments = info["segments"]
    c = len(names)
    report: dict = {"checkpoint": str(args.checkpoint), "frames": len(frames), "segments": segments, "variants": {}}
    for name in args.variants:
        model, _ = model_from_checkpoint(raw, str(args.checkpoint))
        spec = VARIANTS[name]
        if spec is None:
            model.eval()
            adapter = None
        else:
            cfg = OnlineConfig(**spec, lr=args.lr, every=args.every, check_every=0 if args.no_guard else 10)
            adapter = OnlineAdapter(model, cfg)
        per_frame = []  # (K, K) confusion per frame
        t0 = time.perf_counter()
        for k in range(0, len(frames), args.batch):
            x = tensor(frames[k:k + args.batch])
            if adapter is None:
                with torch.no_grad():
                    out = model(x)
                    logits = out[0] if isinstance(out, (tuple, list)) else out
            else:
                logits = adapter(x)
            for j, lg in enumerate(logits):
                truth = labels[k + j]
                pred = torch.nn.functional.interpolate(lg[None].float(), size=truth.shape, mode="bilinear",
                                                       align_corners=False).argmax(1)[0]
                per_frame.append(confusion_matrix(pred, torch.from_numpy(truth), c).numpy())
        ms = 1000 * (time.perf_counter() - t0) / len(frames)
        by_segment = {}
        for seg in segments:
            conf = sum(per_frame[seg["start"]:seg["end"]])
            by_segment[seg["name"]] = 100 * scores_from_confusion(conf, names).miou
        curve = []
        for k in range(0, len(frames), max(1, args.smooth // 5)):
            conf = sum(per_frame[max(0, k - args.smooth // 2):k + args.smooth // 2])
            curve.append((k, 100 * scores_from_confusion(conf, names).miou))
        resets = [vars(r) | {"vanished": [names[i] for i in r.vanished]} for r in adapter.stats.resets] if adapter else []
        report["variants"][name] = {"segments": by_segment, "ms_per_frame": ms, "curve": curve, "resets": resets,
                                    "updates": adapter.stats.updates if adapter else 0,
                                    "every": args.every if adapter else None, "lr": args.lr if adapter else None,
                                    "stopped_at": adapter.stats.stopped_at if adapter else None}
        print(f"{name}: " + "  ".join(f"{k} {v:.1f}" for k, v in by_segment.items())
              + f"  ({ms:.0f} ms/frame, {len(resets)} resets)", flush=True)

    for earlier in args.include:  # variants measured by an earlier invocation on the same drive
        done = json.loads(earlier.read_text())
        if done["frames"] != report["frames"] or done["segments"] != segments:
            raise SystemExit(f"{earlier} was measured on another drive; include only runs on {args.drift}")
        report["variants"] = {k: v for k, v in done["variants"].items() if k not in report["variants"]} | report["variants"]
    seg_names = [s["name"] for s in segments]
    lines = ["| variant | " + " | ".join(seg_names) + " | ms/frame | guard resets |",
             "|---|" + "---|" * (len(seg_names) + 2)]
    for name, v in report["variants"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v['segments'][s]:.1f}" for s in seg_names)
                     + f" | {v['ms_per_frame']:.0f} | {len(v['resets'])} |")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / "online.png")


def _plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    for k, seg in enumerate(report["segments"]):
        if k % 2:
            ax.axvspan(seg["start"], seg["end"], color="0.93")
        ax.text((seg["start"] + seg["end"]) / 2, 1.0, seg["name"], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)
    for name, v in report["variants"].items():
        xs, ys = zip(*v["curve"], strict=True)
        ax.plot(xs, ys, label=name)
        for r in v["resets"]:
            ax.axvline(r.get("frame") or r["batch"], color=ax.lines[-1].get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("frame")
    ax.set_ylabel("mIoU % (sliding window)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

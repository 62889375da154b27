"""Cluster scaling: frames/s of `mslseg infer --cluster` with 1 and 2 (or more) workers on one archive.

    python benchmarks/cluster.py                               # 8 videos x 48 frames of 256x128, workers 1,2
    python benchmarks/cluster.py --model m.onnx --videos 16 --frames 120 --size 512x256 --workers 1,2,4

Generates an archive of videos, starts one local Ray (127.0.0.1, all cores), and runs the same
archive with each worker count into a fresh folder (one CPU and one ONNX Runtime thread per
worker), then a local run (one process, every core) as the baseline. Prints, per run: frames/s
(all frames / wall time from the first worker's start, model loading included), the stage split
from summary.json (mean ms per frame in each worker: decode, pre, infer, post, encode), the
ratio to one worker, frames per CPU-second (the workers' CPU time while segmenting: what the
run costs, whatever else the machine is doing), the 1-minute load average (other processes on a
shared machine take cores from the run), and the CPU line. Without --model it exports a small random-weight
ResNet-18 DeepLab (19 classes, uint8 in, labels out; needs torch).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _export_small(folder: Path) -> Path:
    import torch

    from mslseg.classes import default_class_names, palette_for
    from mslseg.export import export_onnx
    from mslseg.models import deeplabv2
    from mslseg.runtime.metadata import ModelMeta

    torch.manual_seed(0)
    model = deeplabv2("resnet18", num_classes=19, multi_level=False).eval()
    names = default_class_names(19)
    meta = ModelMeta(num_classes=19, class_names=names, palette=palette_for(names))
    return export_onnx(model, meta, folder / "bench.onnx", input_kind="uint8", output_kind="labels", slim=False)


def _archive(folder: Path, videos: int, frames: int, size: str) -> Path:
    import cv2

    from mslseg.runtime.bench.harness import bench_frames
    from mslseg.runtime.sizes import Size

    folder.mkdir(parents=True)
    size = Size.parse(size)
    w, h = size.width, size.height
    for v in range(videos):
        writer = cv2.VideoWriter(str(folder / f"clip{v:03d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
        for image in bench_frames(frames, size, seed=v):
            writer.write(image)
        writer.release()
    return folder


def _row(name: str, summary, wall: float, cpu_s: float) -> dict:
    return {"run": name, "frames": summary.frames, "seconds": round(summary.seconds, 2),
            "fps": round(summary.frames / summary.seconds, 2), "wall_s": round(wall, 2),
            "cpu_s": round(cpu_s, 1), "frames_per_cpu_s": round(summary.frames / max(cpu_s, 1e-9), 2),
            "load_avg_1min": round(os.getloadavg()[0], 2), "stage_ms": summary.stage_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=48, help="frames per video")
    ap.add_argument("--size", default="256x128", help="WIDTHxHEIGHT of the videos")
    ap.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import ray

    from mslseg.runtime import Segmenter
    from mslseg.runtime.bench.harness import describe_cpu, machine_info
    from mslseg.runtime.cluster import ClusterOptions, connect, run_cluster
    from mslseg.runtime.cluster.units import plan_units
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.io.sources import FrameRange, open_sources

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or _export_small(root)
        archive = _archive(root / "archive", args.videos, args.frames, args.size)
        t = time.perf_counter()
        connection = connect("auto")
        print(f"Ray up in {time.perf_counter() - t:.1f} s: {connection.where}")
        logging.getLogger("mslseg").setLevel(logging.WARNING)
        try:
            for n in (int(x) for x in args.workers.split(",")):
                t = time.perf_counter()
                summary = run_cluster(plan_units([str(archive)]), model, InferOptions(out=root / f"w{n}", codec="mp4v"),
                                      ClusterOptions(workers=n), segmenter_options={"device": "cpu", "batch_size": args.batch},
                                      frames=FrameRange(), connection=connection)
                cpu = sum(extra["cpu_s"] or 0.0 for extra in summary.per_source)  # in the workers, while segmenting
                rows.append(_row(f"cluster, {n} worker(s)", summary, time.perf_counter() - t, cpu))
        finally:
            connection.close()
        cores = os.cpu_count() or 1
        with Segmenter(model, device="cpu", batch_size=args.batch, threads=cores) as seg:
            t, c = time.perf_counter(), time.process_time()
            summary = run_infer(open_sources(str(archive)), seg, InferOptions(out=root / "local", codec="mp4v"))
            rows.append(_row(f"local, 1 process, {cores} ORT threads", summary, time.perf_counter() - t,
                             time.process_time() - c))
    base = rows[0]["fps"]
    print(f"archive: {args.videos} videos x {args.frames} frames of {args.size}; model {model.name}; batch {args.batch}")
    for r in rows:
        stages = " ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items())
        print(f"{r['run']:<36} {r['fps']:7.2f} frames/s  (x{r['fps'] / base:.2f} of 1 worker)  "
              f"{r['frames']} frames in {r['seconds']:.1f} s; {r['frames_per_cpu_s']:.2f} frames per CPU-second; "
              f"load average {r['load_avg_1min']}; ms/frame per worker: {stages}")
    print(describe_cpu(machine_info(None)))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "cpu": describe_cpu(machine_info(None)),
                                         "ray": ray.__version__, "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))


if __name__ == "__main__":
    main()

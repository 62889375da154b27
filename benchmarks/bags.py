"""Robot bags: decode frames/s of each bag kind against the same frames as an mp4, and the infer
pipeline's frame rate on a bag relative to model-only (goal >= 0.9, as for video).

    python benchmarks/bags.py --json bags.json                 # 300 frames of 640x480, ~3 min on 2 busy cores
    python benchmarks/bags.py --pipeline-sources mp4,mcap-ros2-bgr8,mcap-ros2-jpeg --out /tmp/bags  # keep files

Writes N frames (a 640x480 window panning over a `bench_frames` canvas: image-like content that
moves, so the mp4 has real motion) as an mp4 (OpenCV mp4v), an MCAP with ROS 2 sensor_msgs/Image
bgr8, an MCAP with ROS 2 CompressedImage jpeg, an MCAP with ROS 1 Image bgr8, a rosbag2 sqlite3
folder (bgr8) and a ROS 1 .bag (bgr8). The bags are written here with `rosbags` and `mcap` (a few
lines; tests/runtime/bags.py does the same for the tests but a script cannot import from tests/
without editing sys.path).

Decode: each file is opened through `open_sources` (VideoSource, or BagSource for the topic) and
iterated to its end, opening included, `--repeats` times; the median frames/s and its ratio to the
mp4's in the same run. Pipeline: a random-weight ResNet-18 DeepLab-v2 (19 classes, trained size
128x64, uint8 in, labels out) runs model-only (`Segmenter.segment`, batch 1, on the first
--pipeline-frames decoded frames in memory) and through `run_infer` on the same frames of the mp4
and the ROS 2 bgr8 MCAP (--pipeline-sources), with outputs off (areas CSV only) and on (overlay
video mp4v + PNG label maps + areas), the runs interleaved; each rate over model-only, with the
spread (`PipelineRow`: slowest pipeline / fastest model .. fastest / slowest) and the last run's mean
ms per frame in the decode, infer and encode (overlay, PNGs, areas) stages. One ONNX Runtime thread
(--threads) leaves the other core to decoding and encoding. Prints a Markdown table, the load
average and the CPU line; --json writes the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402 (after the thread settings)

TOPIC = "/front/image_raw"
T0_NS, PERIOD_NS = 1_700_000_000_000_000_000, 33_333_333  # 30 fps from a 2023 epoch stamp
IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
# name -> (how it is written, encoding); "mp4" first: the decode ratios are to it
KINDS = {"mp4": ("mp4", ""), "mcap-ros2-bgr8": ("mcap2", "bgr8"), "mcap-ros2-jpeg": ("mcap2", "jpeg"),
         "mcap-ros1-bgr8": ("mcap1", "bgr8"), "rosbag2-sqlite3-bgr8": ("sqlite3", "bgr8"),
         "ros1-bag-bgr8": ("bag1", "bgr8")}
PIPELINE_KINDS = "mp4,mcap-ros2-bgr8"  # --pipeline-sources: each costs 2 x --repeats infer runs


def panning_frames(n: int, width: int, height: int) -> Iterator[np.ndarray]:
    """n BGR frames: a window moving over one larger smooth-random canvas (image-like, with motion)."""
    from mslseg.runtime.bench.harness import bench_frames
    from mslseg.runtime.sizes import Size

    canvas = bench_frames(1, Size(width * 3 // 2, height * 3 // 2), seed=0)[0]
    dx, dy = width // 4, height // 4
    for i in range(n):
        t = 2 * np.pi * i / max(n, 1)
        x, y = int(dx + dx * np.sin(t)), int(dy + dy * np.cos(t))
        yield np.ascontiguousarray(canvas[y:y + height, x:x + width])


def _messages(ros: int, encoding: str, frames) -> Iterator[tuple[int, str, bytes, object]]:
    """(stamp, msgtype, serialized message, typestore) per frame, header-stamped at 30 fps."""
    import cv2
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC if ros == 1 else Stores.ROS2_HUMBLE)
    serialize = ts.serialize_ros1 if ros == 1 else ts.serialize_cdr
    for i, frame in enumerate(frames):
        stamp_ns = T0_NS + i * PERIOD_NS
        stamp = ts.types["builtin_interfaces/msg/Time"](*divmod(stamp_ns, 1_000_000_000))
        fields = {"seq": i} if ros == 1 else {}
        header = ts.types["std_msgs/msg/Header"](**fields, stamp=stamp, frame_id="front")
        if encoding == "jpeg":
            buf = cv2.imencode(".jpg", frame)[1].reshape(-1)
            msgtype, msg = COMPRESSED, ts.types[COMPRESSED](header=header, format="jpeg", data=buf)
        else:
            h, w = frame.shape[:2]
            msgtype, msg = IMAGE, ts.types[IMAGE](header=header, height=h, width=w, encoding="bgr8",
                                                  is_bigendian=0, step=w * 3, data=frame.reshape(-1))
        yield stamp_ns, msgtype, bytes(serialize(msg, msgtype)), ts


def _write_mcap(path: Path, ros: int, encoding: str, frames) -> Path:
    from mcap.writer import Writer

    with path.open("wb") as f:
        writer, channel = Writer(f), None
        writer.start(profile=f"ros{ros}", library="mslseg-benchmarks")
        for stamp_ns, msgtype, data, ts in _messages(ros, encoding, frames):
            if channel is None:
                name = msgtype.replace("/msg/", "/") if ros == 1 else msgtype
                schema = writer.register_schema(name=name, encoding=f"ros{ros}msg",
                                                data=ts.generate_msgdef(msgtype, ros_version=ros)[0].encode())
                channel = writer.register_channel(topic=TOPIC, message_encoding="ros1" if ros == 1 else "cdr",
                                                  schema_id=schema)
            writer.add_message(channel_id=channel, log_time=stamp_ns, publish_time=stamp_ns, data=data)
        writer.finish()
    return path


def _write_rosbags(path: Path, ros: int, frames) -> Path:
    """A rosbag2 sqlite3 folder (ros=2) or a ROS 1 .bag, with rosbags' writers."""
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.rosbag2 import StoragePlugin, Writer

    bag = Writer1(path) if ros == 1 else Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3)
    with bag as writer:
        connection = None
        for stamp_ns, msgtype, data, ts in _messages(ros, "bgr8", frames):
            connection = connection or writer.add_connection(TOPIC, msgtype, typestore=ts)
            writer.write(connection, stamp_ns, data)
    return path


def write_all(folder: Path, n: int, width: int, height: int) -> dict[str, Path]:
    """Every kind of KINDS, written from the same n frames; name -> path."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (how, encoding) in KINDS.items():
        frames = panning_frames(n, width, height)
        path = folder / name
        if how == "mp4":
            path = path.with_suffix(".mp4")
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
            for frame in frames:
                writer.write(frame)
            writer.release()
        elif how.startswith("mcap"):
            path = _write_mcap(path.with_suffix(".mcap"), int(how[-1]), encoding, frames)
        else:
            path = _write_rosbags(path.with_suffix(".bag") if how == "bag1" else path, 1 if how == "bag1" else 2,
                                  frames)
        out[name] = path
    return out


def _open(path: Path, end: int | None = None):
    from mslseg.runtime.io.sources import FrameRange, open_sources

    frames = FrameRange(end=None if end is None else str(end))
    return open_sources(str(path), frames, topic=None if path.suffix == ".mp4" else TOPIC)


def decode_rate(path: Path, n: int) -> float:
    """Frames/s of opening `path` and decoding every frame once."""
    t = time.perf_counter()
    done = sum(1 for source in _open(path) for _ in source)
    seconds = time.perf_counter() - t
    if done != n:
        raise SystemExit(f"{path.name}: decoded {done} frames, wrote {n}")
    return n / seconds


def model_only_rate(seg, frames: list[np.ndarray]) -> float:
    """Frames/s of `Segmenter.segment` on one frame at a time: what a user's own loop gets."""
    t = time.perf_counter()
    for frame in frames:
        seg.segment([frame])
    return len(frames) / (time.perf_counter() - t)


OUTPUTS = {"off": {"labels": "none", "overlay": False}, "on": {"labels": "png", "overlay": True}}


def pipeline_rows(seg, files: dict[str, Path], frames: list[np.ndarray], args: argparse.Namespace,
                  root: Path) -> tuple[list[dict], list[float]]:
    """Model-only and every (source, outputs) infer run, interleaved `repeats` times (a load spike on
    a shared machine then hits every row alike); the PipelineRow of each, and the model-only rates."""
    from mslseg.runtime.bench.harness import PipelineRow
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.sizes import Size

    runs = [(name, outputs) for outputs in OUTPUTS for name in args.pipeline_sources.split(",")]
    fps: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    stages: dict[tuple[str, str], dict] = {}
    model: list[float] = []
    for frame in frames[:5]:  # warm-up, untimed
        seg.segment([frame])
    for i in range(args.repeats):
        model.append(model_only_rate(seg, frames))
        for name, outputs in runs:
            opts = InferOptions(out=root / "out" / f"{name}-{outputs}-{i}", codec="mp4v", **OUTPUTS[outputs])
            summary = run_infer(_open(files[name], len(frames)), seg, opts)
            if summary.frames != len(frames) or summary.problems:
                raise SystemExit(f"{name}: {summary.frames} of {len(frames)} frames; {summary.problems}")
            fps[(name, outputs)].append(round(summary.fps, 2))
            stages[(name, outputs)] = summary.stage_ms
    rows = []
    for (name, outputs), rates in fps.items():
        row = PipelineRow(f"{name}, outputs {outputs}", 1, Size.of(args.size, "--size"), len(frames), tuple(rates),
                          round(statistics.median(model), 2), (round(min(model), 2), round(max(model), 2)))
        rows.append({**row.to_dict(), "verdict": row.verdict(), "stage_ms": stages[(name, outputs)]})
    return rows, model


def _export_small(folder: Path) -> Path:
    import torch

    from mslseg.classes import default_class_names, palette_for
    from mslseg.export import export_onnx
    from mslseg.models import deeplabv2
    from mslseg.runtime.metadata import ModelMeta
    from mslseg.runtime.sizes import Size

    torch.manual_seed(0)
    model = deeplabv2("resnet18", num_classes=19, multi_level=False).eval()
    names = default_class_names(19)
    meta = ModelMeta(num_classes=19, class_names=names, palette=palette_for(names), train_size=Size(128, 64))
    return export_onnx(model, meta, folder / "bench.onnx", input_kind="uint8", output_kind="labels", slim=False)


def run(args: argparse.Namespace, root: Path) -> dict:
    from mslseg.runtime import Segmenter
    from mslseg.runtime.sizes import Size

    size = Size.of(args.size, "--size")
    t = time.perf_counter()
    files = write_all(root / "data", args.frames, size.width, size.height)
    print(f"wrote {len(files)} files of {args.frames} frames in {time.perf_counter() - t:.1f} s")
    rates: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(args.repeats):  # interleaved: a load spike hits every kind, not one
        for name, path in files.items():
            rates[name].append(decode_rate(path, args.frames))
    mp4 = statistics.median(rates["mp4"])
    decode = [{"source": name, "fps": round(statistics.median(r), 1), "fps_range": [round(min(r), 1), round(max(r), 1)],
               "ratio_to_mp4": round(statistics.median(r) / mp4, 2),
               "bytes": sum(p.stat().st_size for p in ([files[name]] if files[name].is_file()
                                                       else files[name].iterdir()))} for name, r in rates.items()]
    model = _export_small(root)
    n = min(args.pipeline_frames, args.frames)
    frames = [f.image for source in _open(files["mcap-ros2-bgr8"], n) for f in source]
    with Segmenter(model, device="cpu", batch_size=1, threads=args.threads) as seg:
        pipeline, model_rates = pipeline_rows(seg, files, frames, args, root)
    return {"decode": decode, "pipeline": pipeline, "model_fps": [round(r, 2) for r in model_rates]}


def table(result: dict) -> str:
    lines = ["| source | decode frames/s (range) | x mp4 | MB |", "|---|---|---|---|"]
    for d in result["decode"]:
        lo, hi = d["fps_range"]
        lines.append(f"| {d['source']} | {d['fps']:.0f} ({lo:.0f}-{hi:.0f}) | {d['ratio_to_mp4']:.2f} "
                     f"| {d['bytes'] / 1e6:.0f} |")
    m = result["model_fps"]
    lines += ["", f"model-only: {statistics.median(m):.1f} frames/s (runs: {', '.join(f'{r:.1f}' for r in m)})", "",
              "| infer pipeline | frames/s (runs) | x model-only (spread) | ms/frame decode, infer, encode | verdict |",
              "|---|---|---|---|---|"]
    for p in result["pipeline"]:
        runs = ", ".join(f"{r:.1f}" for r in p["pipeline_fps"])
        lo, hi = p["ratio_range"]
        ms = ", ".join(f"{p['stage_ms'].get(k, 0):.1f}" for k in ("decode", "infer", "encode"))
        lines.append(f"| {p['model']} | {statistics.median(p['pipeline_fps']):.1f} ({runs}) | {p['ratio']:.2f} "
                     f"({lo:.2f}-{hi:.2f}) | {ms} | {p['verdict']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the frames")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each decode and pipeline measurement")
    ap.add_argument("--pipeline-frames", type=int, default=100, help="the first N frames of each pipeline run")
    ap.add_argument("--pipeline-sources", default=PIPELINE_KINDS,
                    help=f"comma-separated, of: {', '.join(KINDS)}")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    ap.add_argument("--out", type=Path, default=None, help="write the files here and keep them (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    unknown = set(args.pipeline_sources.split(",")) - set(KINDS)
    if unknown or args.frames < 1 or args.repeats < 1 or args.pipeline_frames < 1:
        ap.error(f"--frames, --repeats, --pipeline-frames must be >= 1 and --pipeline-sources of {', '.join(KINDS)}"
                 + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))

    from mslseg.runtime.bench.harness import describe_cpu, machine_info

    logging.getLogger("mslseg").setLevel(logging.WARNING)
    t = time.perf_counter()
    if args.out:
        result = run(args, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="mslseg-bench-bags-") as tmp:
            result = run(args, Path(tmp))
    machine = machine_info(args.threads)
    cpu = describe_cpu(machine)
    print(f"decode: {args.frames} frames of {args.size}; pipeline: the first {min(args.pipeline_frames, args.frames)}; "
          f"median of {args.repeats} runs; ONNX Runtime threads {args.threads}\n")
    print(table(result))
    print(f"\nload average (1 min): {os.getloadavg()[0]:.2f}; wall {time.perf_counter() - t:.0f} s\n{cpu}")
    if args.json:
        args.json.write_text(json.dumps({**result, "cpu": cpu, "machine": machine, "load_avg_1min": os.getloadavg()[0],
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))


if __name__ == "__main__":
    main()

"""`bench_models`: throughput and latency of models across backends, batch sizes and input sizes.

Each row runs one model (one variant of it) through `Segmenter.segment` on the same generated
frames, at the size they were generated at (`--size`): `warmup` untimed runs, then `repeats`
timed runs; the medians are reported, with the fastest and slowest run. `ms` is the wall time of
one call (host pre/post included, what a user's loop sees); `infer_ms` the backend's share.
`agree` is the fraction of pixels whose labels match the first model's on the same frames (the
int8 gate: >= 0.98). The pipeline check runs `run_infer` (decode, inference, overlay video, PNG
labels, areas) on a generated video `pipeline_repeats` times and divides its frame rates by the
model-only ones; a ratio whose spread includes 1.0 is reported as within noise.

PyTorch's bf16 autocast is timed on a CPU only where the CPU has native bf16 (x86 avx512_bf16 or
amx_bf16, Arm bf16): elsewhere it is emulated and several times slower than fp32, which measures
nothing a user would choose. The CPU's model and SIMD flags go into the report.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.errors import InputError
from mslseg.runtime.segmenter import Segmenter
from mslseg.runtime.sizes import NATIVE, Size

TORCH_VARIANTS = {"eager": {}, "bf16+cl": {"bf16": True, "channels_last": True}}
# on a GPU, the fastest torch path a user could reach without exporting
TORCH_GPU_VARIANTS = {"fp16+cl+graphs": {"fp16": True, "channels_last": True, "cuda_graphs": True}}


@dataclass
class BenchRow:
    model: str
    backend: str  # onnxruntime | tensorrt | torch
    variant: str  # precision of the file, or the torch variant (eager, bf16+cl)
    device: str
    batch: int
    size: tuple[int, int]  # (height, width)
    ms: float  # median wall time of one batch
    infer_ms: float  # median backend time of one batch
    fps: float  # frames per second at the median
    agree: float | None = None  # label agreement with the first model on the same frames


@dataclass
class PipelineRow:
    model: str
    batch: int
    size: tuple[int, int]
    frames: int
    pipeline_fps: float
    model_fps: float

    @property
    def ratio(self) -> float:
        return self.pipeline_fps / self.model_fps if self.model_fps else 0.0


@dataclass
class BenchReport:
    rows: list[BenchRow] = field(default_factory=list)
    pipeline: list[PipelineRow] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "rows": [asdict(r) for r in self.rows],
                "pipeline": [{**asdict(p), "ratio": round(p.ratio, 3)} for p in self.pipeline]}


def machine_info(threads: int | None) -> dict[str, Any]:
    versions = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "opencv-python-headless", "av"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": threads, "python": platform.python_version(), "versions": versions}


def bench_frames(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Smooth random BGR frames: structure at several scales, so labels are not one class."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    frames = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (max(h // 32, 2), max(w // 32, 2), 3), np.uint8)
        fine = rng.integers(0, 256, (max(h // 4, 2), max(w // 4, 2), 3), np.uint8)
        img = 0.7 * cv2.resize(coarse, (w, h)) + 0.3 * cv2.resize(fine, (w, h))
        frames.append(img.astype(np.uint8))
    return frames


def variants_of(path: Path, torch_fast: bool, device: str = "auto") -> list[tuple[str, dict[str, Any]]]:
    if path.suffix.lower() != ".pt":
        return [("", {})]
    variants = [(k, v) for k, v in TORCH_VARIANTS.items() if torch_fast or k == "eager"]
    if torch_fast and device != "cpu":
        import torch  # a .pt is only benchmarked where torch is installed

        if torch.cuda.is_available():
            variants += list(TORCH_GPU_VARIANTS.items())
    return variants


def _time_rows(seg: Segmenter, label: str, variant: str, batch_sizes: list[int], sizes: list[tuple[int, int]],
               warmup: int, repeats: int, reference: dict,
               on_row: Callable[[BenchRow], None] | None) -> list[BenchRow]:
    rows = []
    for size in sizes:
        frames = bench_frames(max(batch_sizes), size)
        for batch in batch_sizes:
            chunk = frames[:batch]
            for _ in range(warmup):
                seg.segment(chunk)
            walls, infers, results = [], [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                results = seg.segment(chunk)
                walls.append((time.perf_counter() - t0) * 1e3)
                infers.append(results[0].timings.infer_ms * batch)
            labels = np.stack([r.labels for r in results])
            ref = reference.setdefault((size, batch), labels)
            ms = statistics.median(walls)
            row = BenchRow(label, seg.backend_name, variant or seg.meta.precision, seg.device, batch, size,
                           round(ms, 2), round(statistics.median(infers), 2), round(batch * 1e3 / ms, 2),
                           round(float((labels == ref).mean()), 4))
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


def bench_pipeline(seg: Segmenter, label: str, size: tuple[int, int], frames: int,
                   model_fps: float) -> PipelineRow:
    """run_infer on a generated mp4 of `frames` frames at `size`, against the model-only rate."""
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.sources import open_sources
    from mslseg.runtime.video_writer import open_video_writer

    with tempfile.TemporaryDirectory(prefix="mslseg-bench-") as tmp:
        video = Path(tmp) / "bench.mp4"
        writer = open_video_writer(video, 30.0, size, codec="mp4v")
        for f in bench_frames(min(frames, 30), size, seed=1) * (-(-frames // 30)):
            writer.write(f)
        writer.close()
        sources = open_sources(str(video))
        summary = run_infer(sources, seg, InferOptions(out=Path(tmp) / "out"))
    return PipelineRow(label, seg.batch_size, size, summary.frames, round(summary.fps, 2), model_fps)


def bench_models(models: list[Path], *, batch_sizes: list[int], sizes: list[tuple[int, int]], warmup: int = 2,
                 repeats: int = 5, device: str = "auto", threads: int | None = None, torch_fast: bool = True,
                 pipeline_frames: int = 0, on_row: Callable[[BenchRow], None] | None = None) -> BenchReport:
    """Benchmark every model (and torch variant) at every batch size and input size (see module doc)."""
    if not models or not batch_sizes or not sizes or repeats < 1 or warmup < 0:
        raise InputError("bench needs at least one model, batch size and size, repeats >= 1 and warmup >= 0")
    report = BenchReport(machine=machine_info(threads))
    reference: dict = {}
    for path in models:
        for variant, options in variants_of(Path(path), torch_fast, device):
            label = Path(path).name + (f" ({variant})" if variant else "")
            with Segmenter(path, device=device, batch_size=max(batch_sizes), threads=threads,
                           warmup=False, **options) as seg:
                rows = _time_rows(seg, label, variant, batch_sizes, sizes, warmup, repeats, reference, on_row)
                report.rows.extend(rows)
                if pipeline_frames and seg.backend_name != "torch":
                    seg.batch_size = batch_sizes[0]
                    first = next(r for r in rows if r.batch == batch_sizes[0] and r.size == sizes[0])
                    report.pipeline.append(bench_pipeline(seg, label, sizes[0], pipeline_frames, first.fps))
    return report

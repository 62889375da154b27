"""`bench_models`: throughput and latency of models across backends, batch sizes and input sizes.

Each row runs one model (one variant of it) through `Segmenter.segment` on the same generated
frames, at the size they were generated at (`--size`): `warmup` untimed runs, then `repeats`
timed runs; the medians are reported, with the fastest and slowest run. `ms` is the wall time of
one call (host pre/post included, what a user's loop sees); `infer_ms` the backend's share.
`agree` is the fraction of pixels whose labels match the first model's on the same frames (the
int8 gate: >= 0.98). `gflops` is the model's compute per frame at the row's size, 2 x its
multiply-adds (mslseg.runtime.bench.flops: counted from an ONNX graph, or by PyTorch for a .pt; empty
for an engine, or where the `onnx` package is missing). The pipeline check runs `run_infer`
(decode, inference, overlay video, PNG labels, areas) on a generated video `pipeline_repeats`
times and divides its frame rates by the model-only ones; a ratio whose spread includes 1.0 is
reported as within noise.

A row whose runtime is missing here (ONNX Runtime without the GPU provider that --device asks for,
torch without CUDA, no TensorRT) is skipped, not fatal: its reason goes into `skipped` and the notes
as "SKIPPED <row>: <reason>", and the other rows still run, so one check can list a GPU machine's
.pt and .onnx files whatever it has installed. Whether no row at all ran is the caller's to judge.

PyTorch's bf16 autocast is timed on a CPU only where the CPU has native bf16 (x86 avx512_bf16 or
amx_bf16, Arm bf16): elsewhere it is emulated and several times slower than fp32, which measures
nothing a user would choose. The CPU's model and SIMD flags go into the report.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.backends.base import backend_options
from mslseg.runtime.bench.flops import frame_gflops
from mslseg.runtime.bench.machine import (
    cpu_flags,
    describe_cpu,  # noqa: F401 (re-exported: mslseg bench, benchmarks/)
    machine_info,
    native_bf16,
)
from mslseg.runtime.errors import InputError, MissingDependencyError
from mslseg.runtime.segmenter import Segmenter
from mslseg.runtime.sizes import NATIVE, Size

TORCH_VARIANTS = {"eager": {}, "bf16+cl": {"bf16": True, "channels_last": True}}
# on a GPU, the fastest torch path a user could reach without exporting
TORCH_GPU_VARIANTS = {"fp16+cl+graphs": {"fp16": True, "channels_last": True, "cuda_graphs": True}}
NO_BF16 = "bf16 skipped: this CPU has no native bf16 (avx512_bf16/amx_bf16)"


@dataclass
class BenchRow:
    model: str
    backend: str  # onnxruntime | tensorrt | torch
    variant: str  # precision of the file, or the torch variant (eager, bf16+cl)
    device: str
    batch: int
    size: Size  # what the frames were generated at and ran at
    ms: float  # median wall time of one batch
    infer_ms: float  # median backend time of one batch
    fps: float  # frames per second at the median
    agree: float | None = None  # label agreement with the first model on the same frames
    ms_range: tuple[float, float] = (0.0, 0.0)  # fastest and slowest timed run
    gflops: float | None = None  # per frame at `size` (mslseg.runtime.bench.flops); None where not counted

    @property
    def fps_range(self) -> tuple[float, float]:
        return self.batch * 1e3 / self.ms_range[1], self.batch * 1e3 / self.ms_range[0]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": str(self.size), "ms_range": list(self.ms_range)}


@dataclass
class PipelineRow:
    model: str
    batch: int
    size: Size
    frames: int  # per run
    pipeline_fps: tuple[float, ...]  # one per run
    model_fps: float  # median of the model-only runs
    model_fps_range: tuple[float, float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.pipeline_fps) / self.model_fps if self.model_fps else 0.0

    @property
    def ratio_range(self) -> tuple[float, float]:
        """The widest the ratio can be: slowest pipeline / fastest model .. fastest / slowest."""
        lo, hi = self.model_fps_range
        return (min(self.pipeline_fps) / hi, max(self.pipeline_fps) / lo) if lo else (0.0, 0.0)

    @property
    def within_noise(self) -> bool:
        lo, hi = self.ratio_range
        return lo <= 1.0 <= hi

    def verdict(self) -> str:
        lo, hi = self.ratio_range
        if self.within_noise:
            return "within noise (the spread includes 1.0)"
        if lo > 1.0:
            return "above 1.0: noise (a pipeline cannot outrun its model); rerun on an idle machine"
        return f"the pipeline costs {100 * (1 - self.ratio):.0f}% of the model-only rate"

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.ratio_range
        return {**asdict(self), "size": str(self.size), "model_fps_range": list(self.model_fps_range),
                "pipeline_fps": list(self.pipeline_fps), "ratio": round(self.ratio, 3),
                "ratio_range": [round(lo, 3), round(hi, 3)], "within_noise": self.within_noise}


@dataclass
class BenchReport:
    rows: list[BenchRow] = field(default_factory=list)
    pipeline: list[PipelineRow] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was skipped, and why
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (row, reason): its runtime is missing here

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "notes": self.notes, "rows": [r.to_dict() for r in self.rows],
                "pipeline": [p.to_dict() for p in self.pipeline],
                "skipped": [{"row": row, "reason": why} for row, why in self.skipped]}

    def skip(self, row: str, reason: str) -> str:
        """Record that `row` could not run here; returns its SKIPPED line."""
        self.skipped.append((row, reason))
        line = f"SKIPPED {row}: {reason}"
        self.notes.append(line)
        return line


def bench_frames(n: int, size: Size, seed: int = 0) -> list[np.ndarray]:
    """Smooth random BGR frames: structure at several scales, so labels are not one class."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size.hw
    frames = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (max(h // 32, 2), max(w // 32, 2), 3), np.uint8)
        fine = rng.integers(0, 256, (max(h // 4, 2), max(w // 4, 2), 3), np.uint8)
        img = 0.7 * cv2.resize(coarse, (w, h)) + 0.3 * cv2.resize(fine, (w, h))
        frames.append(img.astype(np.uint8))
    return frames


def variants_of(path: Path, torch_fast: bool, device: str = "auto",
                notes: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The variants to time of one model: a .pt's torch variants; `notes` gets what was skipped."""
    if path.suffix.lower() != ".pt":
        return [("", {})]
    variants = [(k, v) for k, v in TORCH_VARIANTS.items() if torch_fast or k == "eager"]
    if not torch_fast:
        return variants
    import torch  # a .pt is only benchmarked where torch is installed

    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_gpu:
        variants += list(TORCH_GPU_VARIANTS.items())
    elif not native_bf16(cpu_flags()):
        variants = [(k, v) for k, v in variants if not v.get("bf16")]
        if notes is not None and NO_BF16 not in notes:
            notes.append(NO_BF16)
    return variants


def _time_rows(seg: Segmenter, label: str, variant: str, batch_sizes: list[int], sizes: list[Size],
               warmup: int, repeats: int, reference: dict, gflops: Callable[[Size], float | None],
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
                           round(float((labels == ref).mean()), 4), (round(min(walls), 2), round(max(walls), 2)),
                           gflops(size))
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


def bench_pipeline(seg: Segmenter, label: str, size: Size, frames: int, model: BenchRow,
                   repeats: int = 3) -> PipelineRow:
    """run_infer `repeats` times on a generated mp4 of `frames` frames at `size`, against `model`'s rate."""
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.io.sources import open_sources
    from mslseg.runtime.io.video_writer import open_video_writer

    rates, done = [], 0
    with tempfile.TemporaryDirectory(prefix="mslseg-bench-") as tmp:
        video = Path(tmp) / "bench.mp4"
        writer = open_video_writer(video, 30.0, size.hw, codec="mp4v")
        for f in bench_frames(min(frames, 30), size, seed=1) * (-(-frames // 30)):
            writer.write(f)
        writer.close()
        for i in range(repeats):
            summary = run_infer(open_sources(str(video)), seg, InferOptions(out=Path(tmp) / f"out{i}"))
            rates.append(round(summary.fps, 2))
            done = summary.frames
    lo, hi = model.fps_range
    return PipelineRow(label, seg.batch_size, size, done, tuple(rates), model.fps, (round(lo, 2), round(hi, 2)))


def _has_onnx() -> bool:
    try:
        return importlib.util.find_spec("onnx") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["onnx"] is None (blocked)
        return False


def _flops_counter(path: Path, factory: str | None, notes: list[str]) -> Callable[[Size], float | None]:
    """size -> GFLOPs per frame of `path`, counted once per size; a failed count is a note, not an error."""
    counts: dict[Size, float | None] = {}

    def count(size: Size) -> float | None:
        if size not in counts:
            try:
                value = frame_gflops(path, size, factory=factory)
            except Exception as exc:  # noqa: BLE001 - a missing column must not lose minutes of timings
                notes.append(f"GFLOPs of {path.name} at {size} not counted: {exc}")
                value = None
            if value is None and path.suffix.lower() == ".onnx" and not _has_onnx():
                note = "GFLOPs not counted: counting reads the graph with the onnx package (pip install onnx)"
                if note not in notes:  # a runtime-only install lacks it; say so once, not per size
                    notes.append(note)
            counts[size] = None if value is None else round(value, 2)
        return counts[size]
    return count


def bench_models(models: list[Path], *, batch_sizes: list[int], sizes: list[Size], warmup: int = 2,
                 repeats: int = 5, device: str = "auto", threads: int | None = None, torch_fast: bool = True,
                 pipeline_frames: int = 0, pipeline_repeats: int = 3,
                 on_row: Callable[[BenchRow], None] | None = None, factory: str | None = None,
                 on_skip: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark every model (and torch variant) at every batch size and input size (see module doc).

    `factory`: the python:MODULE:FUNCTION that built the .pt models of a user's own network.
    `on_skip`: called with the SKIPPED line of each row whose runtime is missing here."""
    if not models or not batch_sizes or not sizes or repeats < 1 or warmup < 0 or pipeline_repeats < 1:
        raise InputError("bench needs at least one model, batch size and size, repeats >= 1, "
                         "pipeline repeats >= 1 and warmup >= 0")
    sizes = [Size.of(s, "--size") for s in sizes]
    report = BenchReport(machine=machine_info(threads, cpu_flags()))
    if any(Path(p).suffix.lower() == ".pt" for p in models):
        try:
            import torch  # only where a .pt is timed: the runtime never needs torch
        except ImportError:
            pass  # each .pt row says SKIPPED below (the torch backend's own message)
        else:
            report.machine["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    timing = _Timing(batch_sizes, sizes, warmup, repeats, pipeline_frames, pipeline_repeats, on_row)
    for path in models:
        gflops = _flops_counter(Path(path), factory, report.notes)
        try:
            variants = variants_of(Path(path), torch_fast, device, report.notes)
        except ImportError:  # a .pt without torch: its eager row says why below
            variants = [("eager", {})]
        for variant, options in variants:
            if factory and Path(path).suffix.lower() == ".pt":
                options = {**options, "factory": factory}
            if threads and "threads" in backend_options(path):  # one bench, many kinds: an engine has no CPU threads
                options = {**options, "threads": threads}
            label = Path(path).name + (f" ({variant})" if variant else "")
            try:
                # "native": each frame runs at its own size, the --size it was generated at
                seg = Segmenter(path, device=device, batch_size=max(batch_sizes), size=NATIVE,
                                warmup=False, **options)
            except MissingDependencyError as exc:  # ProviderLoadError too: a GPU provider that did not load
                line = report.skip(label, str(exc))
                if on_skip:
                    on_skip(line)
                continue
            with seg:
                _bench_variant(seg, label, variant, timing, report, gflops)
    return report


@dataclass
class _Timing:
    """What every row of one bench_models call shares."""
    batch_sizes: list[int]
    sizes: list[Size]
    warmup: int
    repeats: int
    pipeline_frames: int
    pipeline_repeats: int
    on_row: Callable[[BenchRow], None] | None
    reference: dict = field(default_factory=dict)  # (size, batch) -> the first model's labels


def _bench_variant(seg: Segmenter, label: str, variant: str, t: _Timing, report: BenchReport,
                   gflops: Callable[[Size], float | None]) -> None:
    runnable = [s for s in t.sizes if seg.run_size in (None, s)]
    for s in t.sizes:
        if s not in runnable:
            report.notes.append(f"{label} skipped at {s}: its input size is fixed at {seg.run_size}")
    rows = _time_rows(seg, label, variant, t.batch_sizes, runnable, t.warmup, t.repeats, t.reference, gflops,
                      t.on_row)
    report.rows.extend(rows)
    if t.pipeline_frames and runnable and seg.backend_name != "torch":
        seg.batch_size = t.batch_sizes[0]
        first = next(r for r in rows if r.batch == t.batch_sizes[0] and r.size == runnable[0])
        report.pipeline.append(bench_pipeline(seg, label, runnable[0], t.pipeline_frames, first,
                                              t.pipeline_repeats))

"""`mslseg bench`: a side-by-side throughput and latency table of models and backends."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated

import typer

from mslseg.architectures import FACTORY_OPTION_HELP

_COLUMNS = ("model", "backend", "variant", "device", "batch", "WxH", "GFLOPs", "ms/batch", "min-max ms", "infer ms",
            "FPS", "agree")


def _ints(text: str, what: str) -> list[int]:
    from mslseg.runtime.errors import InputError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise InputError(f"{what} '{text}' is not a comma-separated list of positive integers (1,4)")
    return values


def _table(report, threads):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"mslseg bench ({report.machine['cores']} cores, threads {threads or 'default'})")
    for i, col in enumerate(_COLUMNS):
        table.add_column(col, justify="left" if i < 4 else "right")
    for r in report.rows:
        agree = "" if r.agree is None else f"{100 * r.agree:.1f}%"
        gflops = "" if r.gflops is None else f"{r.gflops:.1f}"
        table.add_row(escape(r.model), r.backend, r.variant, r.device, str(r.batch), str(r.size),
                      gflops, f"{r.ms:.1f}", f"{r.ms_range[0]:.1f}-{r.ms_range[1]:.1f}", f"{r.infer_ms:.1f}",
                      f"{r.fps:.2f}", agree)
    return table


def _speedups(rows) -> list[str]:
    """Per input size and batch: the fastest runtime row against the fastest PyTorch row."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.size, r.batch), []).append(r)
    lines = []
    for (size, b), group in groups.items():
        torch_rows = [r for r in group if r.backend == "torch"]
        other = [r for r in group if r.backend != "torch"]
        if torch_rows and other:
            best, base = max(other, key=lambda r: r.fps), max(torch_rows, key=lambda r: r.fps)
            lines.append(f"{size} b{b}: fastest runtime {best.model} {best.fps:.2f} FPS = "
                         f"{best.fps / base.fps:.2f}x the fastest PyTorch ({base.model}, {base.fps:.2f} FPS)")
    return lines


def bench(
    models: Annotated[list[Path], typer.Argument(
        help="Models to compare: .pt (PyTorch), .onnx (fp32/fp16/int8), .engine/.plan (TensorRT).")],
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    size: Annotated[list[str] | None, typer.Option(
        metavar="WIDTHxHEIGHT", help="Input size WIDTHxHEIGHT; repeat for several (default 512x256).")] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs before timing.")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs; the median is reported, with min-max.")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda[:N], tensorrt[:N].")] = "auto",
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads of the .onnx (ONNX Runtime's intra-op pool) and .pt (torch.set_num_threads) "
        "rows; an engine row has none.")] = None,
    torch_fast: Annotated[bool, typer.Option(
        help="Also time PyTorch with bf16 autocast + channels_last.")] = True,
    pipeline_frames: Annotated[int, typer.Option(
        min=0, help="Frames of the generated video for the pipeline-vs-model check (0: skip).")] = 60,
    pipeline_repeats: Annotated[int, typer.Option(
        min=1, help="Runs of the pipeline check; the ratio is reported with its spread over them.")] = 3,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the table as JSON.")]
    = Path("bench.json"),
    factory: Annotated[str | None, typer.Option(metavar="python:MODULE:FUNCTION",
                                                help=f"(.pt) {FACTORY_OPTION_HELP}")] = None,
) -> None:
    """Time models across backends, batch sizes and input sizes; print a table and write JSON.

    A row whose runtime is missing here (say .onnx with --device cuda and a CPU-only ONNX Runtime)
    prints SKIPPED with the reason and the other rows run; when no row can run, the JSON (with the
    reasons) is still written and the command fails."""
    from rich.console import Console

    from mslseg.runtime.bench.harness import bench_models
    from mslseg.runtime.errors import MissingDependencyError
    from mslseg.runtime.io.atomic import atomic_write_text
    from mslseg.runtime.sizes import Size

    sizes = [Size.parse(s) for s in (size or ["512x256"])]
    batches = _ints(batch, "--batch")
    progress = Console(stderr=True)

    def on_row(r) -> None:
        progress.print(f"  {r.model} b{r.batch} {r.size}: {r.ms:.1f} ms",
                       highlight=False, markup=False)

    def on_skip(line: str) -> None:
        progress.print(line, highlight=False, markup=False, soft_wrap=True)  # one greppable line

    report = bench_models(models, batch_sizes=batches, sizes=sizes, warmup=warmup, repeats=repeats,
                          device=device, threads=threads, torch_fast=torch_fast,
                          pipeline_frames=pipeline_frames, pipeline_repeats=pipeline_repeats, on_row=on_row,
                          factory=factory, on_skip=on_skip)
    if not report.rows:
        atomic_write_text(out, json.dumps(report.to_dict(), indent=2))
        raise MissingDependencyError(
            f"no model could run with --device {device}: all {len(report.skipped)} rows were SKIPPED (the "
            f"reasons are above and in {out}); install the missing runtime or choose another --device")
    _print_report(report, threads)
    atomic_write_text(out, json.dumps(report.to_dict(), indent=2))
    typer.echo(f"wrote {out}")


def _print_report(report, threads: int | None) -> None:
    from mslseg.cli.choices import table_console
    from mslseg.runtime.bench.harness import describe_cpu

    console = table_console()
    typer.echo(describe_cpu(report.machine))
    console.print(_table(report, threads))
    for note in report.notes:
        typer.echo(note)
    for p in report.pipeline:
        (lo, hi), fps = p.ratio_range, sorted(p.pipeline_fps)
        typer.echo(f"pipeline {p.model} b{p.batch} {p.size}: {statistics.median(fps):.2f} FPS "
                   f"({fps[0]:.2f}-{fps[-1]:.2f} over {len(fps)} runs of {p.frames} frames) vs model-only "
                   f"{p.model_fps:.2f} FPS ({p.model_fps_range[0]:.2f}-{p.model_fps_range[1]:.2f}) = "
                   f"{p.ratio:.2f}x ({lo:.2f}-{hi:.2f}x): {p.verdict()}")
    for line in _speedups(report.rows):
        typer.echo(line)

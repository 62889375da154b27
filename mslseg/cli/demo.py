"""`mslseg demo`: synthetic data -> source-only -> IW-MSL + multi-level -> evaluate -> ONNX -> video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mslseg.demo import DemoPlan  # light: no torch

_FULL, _FAST = DemoPlan.full(), DemoPlan.fast()


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo writes.")] = Path("mslseg-demo"),
    fast: Annotated[bool, typer.Option(
        help=f"Only check that every stage runs ({_FAST.takes}); too short to measure adaptation.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier demo in --out.")] = False,
) -> None:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # decoding threads run beside torch
    from rich.console import Console
    from rich.table import Table

    from mslseg.cli.progress import run_progress
    from mslseg.demo import run_demo, verdict

    console = Console()
    plan = _FAST if fast else _FULL
    result = run_demo(out, plan, overwrite=overwrite, say=lambda text: console.print(text, highlight=False),
                      progress=lambda name: run_progress(name, log_every=50))
    if plan.measures_adaptation:
        table = Table(title="target domain (val split), IoU %")
        table.add_column("class")
        table.add_column("source only", justify="right")
        table.add_column("adapted", justify="right")
        for name, a, b in zip(result.before.class_names, result.before.iou, result.after.iou, strict=True):
            if a == a or b == b:  # classes present in the split
                table.add_row(name, f"{100 * a:.1f}" if a == a else "-", f"{100 * b:.1f}" if b == b else "-")
        table.add_row("mIoU", f"{100 * result.before.miou:.2f}", f"{100 * result.after.miou:.2f}", style="bold")
        console.print(table)
    typer.echo(verdict(result, plan))
    for what, path in result.files.items():
        typer.echo(f"{what:24} {path}")
    stages = ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in result.seconds.items())
    total = f"in {sum(result.seconds.values()):.0f} s ({stages})"
    if plan.measures_adaptation:
        typer.echo(f"demo done {total}: mIoU {100 * result.before.miou:.2f} -> {100 * result.after.miou:.2f}")
    else:
        typer.echo(f"chain check done {total}")


demo.__doc__ = (f"Show the whole flow on generated data ({_FULL.takes}): adaptation, before/after "
                "scores, ONNX export, a segmented video.")

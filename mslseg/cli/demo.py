"""`mslseg demo`: synthetic data -> source-only -> IW-MSL + multi-level -> evaluate -> ONNX -> video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo writes.")] = Path("mslseg-demo"),
    fast: Annotated[bool, typer.Option(help="A tiny version (under a minute) that checks the whole chain.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier demo in --out.")] = False,
) -> None:
    """Show the whole flow on generated data in ~10 minutes on a CPU: adaptation, before/after, video."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # decoding threads run beside torch
    from rich.console import Console
    from rich.table import Table

    from mslseg.demo import DemoPlan, run_demo

    console = Console()
    result = run_demo(out, DemoPlan.fast() if fast else DemoPlan.full(), overwrite=overwrite,
                      say=lambda text: console.print(text, highlight=False))
    table = Table(title="target domain (val split), IoU %")
    table.add_column("class")
    table.add_column("source only", justify="right")
    table.add_column("adapted", justify="right")
    for name, a, b in zip(result.before.class_names, result.before.iou, result.after.iou, strict=True):
        if a == a or b == b:  # classes present in the split
            table.add_row(name, f"{100 * a:.1f}" if a == a else "-", f"{100 * b:.1f}" if b == b else "-")
    table.add_row("mIoU", f"{100 * result.before.miou:.2f}", f"{100 * result.after.miou:.2f}", style="bold")
    console.print(table)
    console.print("Short runs gain mostly from BatchNorm statistics on target images; the README's method "
                  "table shows each loss's share.", highlight=False)
    for what, path in result.files.items():
        typer.echo(f"{what:24} {path}")
    stages = ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in result.seconds.items())
    typer.echo(f"demo done in {sum(result.seconds.values()):.0f} s ({stages}): mIoU {100 * result.before.miou:.2f}"
               f" -> {100 * result.after.miou:.2f}")

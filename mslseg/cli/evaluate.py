"""`mslseg evaluate`: per-class IoU, mIoU (and SYNTHIA's mIoU*) on a labelled split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="mslseg checkpoint (.pt).")],
    data: Annotated[Path, typer.Option(help="Root of the labelled split.")],
    kind: Annotated[str, typer.Option(help="Layout: cityscapes | gta5 | synthia | nthu | folder.")] = "cityscapes",
    split: Annotated[str, typer.Option(help="Split (cityscapes: val; nthu: Test).")] = "val",
    classes: Annotated[int, typer.Option(help="Class set: 19, 16 or 13.")] = 19,
    size: Annotated[str | None, typer.Option(help="Score at WxH (images and labels resized; the reference used 1024x512). Default: full resolution.")] = None,
    flip: Annotated[bool, typer.Option(help="Average the prediction with that of the mirrored image.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for scores.json, confusion.png, predictions/.")] = Path("eval"),
    save_predictions: Annotated[bool, typer.Option(help="Write colourised predictions.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N images.")] = None,
    label_map: Annotated[Path | None, typer.Option(help="folder layout: label mapping file.")] = None,
) -> None:
    """Score a checkpoint: confusion matrix over the whole split, IoU per class, mIoU."""
    from rich.console import Console
    from rich.table import Table

    from mslseg.data.config import DataConfig
    from mslseg.training.config import coerce_value
    from mslseg.training.eval_run import evaluate_checkpoint

    wh = coerce_value(size, tuple[int, int], "--size") if size else None
    cfg = DataConfig(kind=kind, root=str(data), split=split, classes=classes, size=wh, limit=limit,
                     label_map=str(label_map) if label_map else None)
    scores = evaluate_checkpoint(checkpoint, cfg, out, device=device, flip=flip, save_predictions=save_predictions)
    table = Table(title=f"{checkpoint} on {data} ({split})")
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, iou in zip(scores.class_names, scores.iou, strict=True):
        table.add_row(name, "-" if iou != iou else f"{100 * iou:.2f}")
    table.add_row("mIoU", f"{100 * scores.miou:.2f}", style="bold")
    if scores.miou13 is not None:
        table.add_row("mIoU* (13)", f"{100 * scores.miou13:.2f}", style="bold")
    Console().print(table)
    typer.echo(f"mIoU {100 * scores.miou:.2f}; wrote {out}/scores.json and {out}/confusion.png")

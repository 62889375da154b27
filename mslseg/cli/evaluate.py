"""`mslseg evaluate`: per-class IoU, mIoU (and SYNTHIA's mIoU*) on a labelled split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mslseg.architectures import FACTORY_OPTION_HELP


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="mslseg checkpoint (.pt).")],
    data: Annotated[Path, typer.Option(help="Root of the labelled split.")],
    kind: Annotated[str, typer.Option(help="Layout: cityscapes | gta5 | synthia | nthu | folder.")] = "cityscapes",
    split: Annotated[str, typer.Option(help="Split (cityscapes: val; nthu: Test).")] = "val",
    classes: Annotated[int, typer.Option(help="Class set: 19, 16 or 13.")] = 19,
    size: Annotated[str | None, typer.Option(metavar="WxH|native", help="Run the model at WIDTHxHEIGHT, or 'native' (each image's own size). Default: the model's training size, resized as in training, as `mslseg infer` runs it. Scores are at the labels' resolution.")] = None,
    resize_labels: Annotated[bool, typer.Option(help="Resize the labels to --size too and score there (the MaxSquareLoss reference protocol, 1024x512 on Cityscapes).")] = False,
    flip: Annotated[bool, typer.Option(help="Average the prediction with that of the mirrored image.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for scores.json, confusion.png, predictions/. Default: beside the checkpoint, named after it, the data and the split: runs/a/best.pt on datasets/Cityscapes -> runs/a/eval-best-Cityscapes-val/.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the files of an earlier evaluation in --out (default: refuse a non-empty --out).")] = False,
    save_predictions: Annotated[bool, typer.Option(help="Write colourised predictions.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N images.")] = None,
    label_map: Annotated[Path | None, typer.Option(help="folder layout: label mapping file.")] = None,
    factory: Annotated[str | None, typer.Option(metavar="python:MODULE:FUNCTION", help=FACTORY_OPTION_HELP)] = None,
) -> None:
    """Score a checkpoint: confusion matrix over the whole split, IoU per class, mIoU."""
    from rich.table import Table

    from mslseg.checkpoint import refuse_exported
    from mslseg.cli.choices import table_console
    from mslseg.data.config import DataConfig
    from mslseg.runtime.io.atomic import refuse_existing
    from mslseg.runtime.sizes import parse_run_size
    from mslseg.training.eval_run import evaluate_checkpoint

    refuse_exported(checkpoint, "mslseg evaluate scores a .pt checkpoint (evaluate the checkpoint it was exported from)")
    out = out if out is not None else default_eval_folder(checkpoint, data, split)
    refuse_existing(out, overwrite, folder=True)
    run_size = parse_run_size(size)
    cfg = DataConfig(kind=kind, root=str(data), split=split, classes=classes, limit=limit,
                     label_map=str(label_map) if label_map else None, resize_labels=resize_labels)
    scores = evaluate_checkpoint(checkpoint, cfg, out, device=device, flip=flip, save_predictions=save_predictions,
                                 size=run_size, factory=factory)
    table = Table(title=f"{checkpoint} on {data} ({split})")
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, iou in zip(scores.class_names, scores.iou, strict=True):
        table.add_row(name, "-" if iou != iou else f"{100 * iou:.2f}")
    table.add_row("mIoU", f"{100 * scores.miou:.2f}", style="bold")
    if scores.miou13 is not None:
        table.add_row("mIoU* (13)", f"{100 * scores.miou13:.2f}", style="bold")
    table_console().print(table)
    typer.echo(f"mIoU {100 * scores.miou:.2f} ({scores.protocol}); wrote {out}/scores.json and {out}/confusion.png")


def default_eval_folder(checkpoint: Path, data: Path, split: str) -> Path:
    """runs/a/best.pt on datasets/Cityscapes, split val -> runs/a/eval-best-Cityscapes-val."""
    name = data.resolve().name or "data"
    return checkpoint.parent / f"eval-{checkpoint.stem}-{name}-{split}"

"""`mslseg convert`: foreign weights -> an mslseg checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mslseg.cli.choices import choice_enum

# mslseg.foreign.KEY_MAPPERS owns these, but importing it brings torch into every CLI start; a test
# holds the two equal (tests/cli/test_cli_choices.py)
ForeignFormat = choice_enum("ForeignFormat", ("msl", "deeplab-imagenet", "torchvision-resnet"))


def convert(
    src: Annotated[Path, typer.Argument(help="Foreign weights file (.pth).")],
    dst: Annotated[Path, typer.Argument(help="mslseg checkpoint to write (.pt).")],
    from_: Annotated[
        ForeignFormat,
        typer.Option("--from", help="Format of SRC: msl (MaxSquareLoss/AdaptSegNet DeepLab-v2), "
                     "deeplab-imagenet (the DeepLab init file), torchvision-resnet."),
    ],
    num_classes: Annotated[
        int | None, typer.Option(min=1, help="Classes of the new heads (backbone-only formats: default 19).")
    ] = None,
    multi_level: Annotated[
        bool, typer.Option(help="Give a backbone-only import an auxiliary head on layer3.")
    ] = True,
    partial: Annotated[bool, typer.Option(help="Load what fits instead of failing on missing keys.")] = False,
    size: Annotated[str | None, typer.Option(
        metavar="WxH|native", help="The size the model runs at by default (its recorded training size), "
        "WIDTHxHEIGHT or native. Default: --from msl 1024x512 (where the released models were adapted and "
        "scored); the backbone formats record none (training does).")] = None,
) -> None:
    """Convert foreign DeepLab-v2 / ResNet weights into an mslseg checkpoint."""
    from mslseg.checkpoint import file_sha256, save_checkpoint
    from mslseg.foreign import import_foreign
    from mslseg.runtime.errors import InputError
    from mslseg.runtime.sizes import NATIVE, parse_run_size

    run_size = parse_run_size(size)
    if dst.resolve() == src.resolve():
        raise InputError(f"DST {dst} is SRC; choose another output path")
    model, meta = import_foreign(src, from_.value, num_classes=num_classes,
                                 multi_level=multi_level, partial=partial)
    meta = meta.with_(source_sha256=file_sha256(src))
    if run_size is not None:
        meta = meta.with_(train_size=None if run_size == NATIVE else run_size)
    save_checkpoint(dst, model, meta)
    spec = model.spec
    at = str(meta.train_size) if meta.train_size else "each frame's own size"
    typer.echo(f"wrote {dst} ({meta.arch}, {spec.num_classes} classes, "
               f"{'multi-level' if spec.multi_level else 'single-level'}, {spec.branches} ASPP branches, "
               f"runs at {at})")

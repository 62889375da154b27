"""`mslseg synth`: write the synthetic two-domain street data (GTA5 + Cityscapes layouts, a video)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def synth(
    out: Annotated[Path, typer.Argument(help="Folder for OUT/gta5, OUT/cityscapes and OUT/target.mp4.")],
    source: Annotated[int, typer.Option(min=1, help="Source-domain images (GTA5 layout).")] = 200,
    target_train: Annotated[int, typer.Option(min=1, help="Target-domain training images (Cityscapes train).")
                            ] = 200,
    target_val: Annotated[int, typer.Option(min=0, help="Labelled target images (Cityscapes val).")] = 50,
    size: Annotated[str, typer.Option(help="Image size WIDTHxHEIGHT.")] = "256x128",
    video: Annotated[bool, typer.Option(help="Also write a target-domain clip OUT/target.mp4.")] = True,
    video_frames: Annotated[int, typer.Option(min=1, help="Frames of the clip (15 fps).")] = 120,
    drift_frames: Annotated[int, typer.Option(min=0, help="Also write OUT/drift.mp4: a drive whose conditions drift (dusk, fog, a sudden noisy low camera), with labels per frame in OUT/drift_labels/ and its segments in OUT/drift.json (0: none).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same data.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier `mslseg synth` output in OUT.")] = False,
) -> None:
    """Write synthetic street scenes: a flat "game" source domain, a darker, noisier camera target domain."""
    from mslseg.data.synthetic import write_synthetic_dataset
    from mslseg.runtime.io.atomic import refuse_existing

    refuse_existing(out, overwrite, option="OUT", folder=True)
    summary = write_synthetic_dataset(out, source=source, target_train=target_train, target_val=target_val,
                                      size=size, video=video, video_frames=video_frames,
                                      seed=seed, overwrite=overwrite, drift_frames=drift_frames)
    typer.echo(summary.line())

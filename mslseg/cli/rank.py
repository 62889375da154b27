"""`mslseg rank`: which checkpoint to ship, decided on unlabelled footage (label-free signals)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mslseg.label_free_scores import DEFAULT_SCORE, EXPORT_SCORE, LABEL_FREE_SCORES


def rank(
    footage: Annotated[Path, typer.Argument(help="Unlabelled target footage: a video, a folder or glob of videos, a bag, or a dataset root (--kind).")],
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints (.pt) and exported models (.onnx, .engine) to rank.")],
    reference: Annotated[Path | None, typer.Option(help="The model the class shares are compared with: the source model (default: the first checkpoint).")] = None,
    source: Annotated[Path | None, typer.Option(help="Labelled source data (its root) for ATC's estimated accuracy.")] = None,
    source_kind: Annotated[str, typer.Option(help="Layout of --source: gta5 | synthia | cityscapes | folder.")] = "gta5",
    kind: Annotated[str | None, typer.Option(help="Layout of FOOTAGE: video | bag | folder | cityscapes (default: from the path).")] = None,
    frames: Annotated[int, typer.Option(min=2, help="Frames spread evenly over the footage.")] = 64,
    score: Annotated[str | None, typer.Option(help=f"The label-free score that ranks: {' | '.join(LABEL_FREE_SCORES)}. Default: {DEFAULT_SCORE}, or {EXPORT_SCORE} when an exported model is among them (it gives no full distribution).")] = None,
    size: Annotated[str | None, typer.Option(metavar="WxH|native", help="Run the models at WIDTHxHEIGHT (default: each model's training size).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for rank.json, class_share.png, disagreement.png (default: rank-<footage name> beside the first checkpoint).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the files of an earlier ranking in --out.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Rank checkpoints and exported models on unlabelled footage: label-free signals, estimated accuracy, collapse check."""
    from rich.table import Table

    from mslseg.checkpoint import exported_kind
    from mslseg.cli.choices import table_console
    from mslseg.cli.train import target_kind_for
    from mslseg.data.config import DataConfig
    from mslseg.runtime.errors import ConfigError
    from mslseg.runtime.io.atomic import refuse_existing
    from mslseg.runtime.sizes import parse_run_size
    from mslseg.training.ranking import rank_checkpoints

    if score is None:
        exports = [p for p in checkpoints if p.is_file() and exported_kind(p) is not None]
        score = EXPORT_SCORE if exports else DEFAULT_SCORE
        if exports:
            typer.echo(f"ranking by {EXPORT_SCORE}: {exports[0]} is an exported model, which gives no {DEFAULT_SCORE} "
                       f"(it needs the whole class distribution); --score {DEFAULT_SCORE} ranks the checkpoints by it")
    if score not in LABEL_FREE_SCORES:
        raise ConfigError(f"--score '{score}' is not one of {', '.join(LABEL_FREE_SCORES)}")
    name = footage.stem if footage.suffix else footage.name
    out = out if out is not None else checkpoints[0].parent / f"rank-{name or 'footage'}"
    refuse_existing(out, overwrite, folder=True)
    kind = kind or target_kind_for(footage)
    data = DataConfig(kind=kind, root=str(footage), split="train", labelled=False,
                      video_frames=frames if kind in ("video", "bag") else None)
    src = DataConfig(kind=source_kind, root=str(source), split="train") if source is not None else None
    ranking = rank_checkpoints(data, checkpoints, out, reference=reference, source=src, frames=frames, score=score,
                              size=parse_run_size(size), device=device)
    ranked, names = ranking.ranked, ranking.class_names
    table = Table(title=f"{len(ranked)} models on {ranking.frames} frames of {footage} (no labels), best first "
                        f"by {score}; reference {ranking.reference}")
    # the signals beside the score, each once (the score's own column is the score)
    shown = [(key, head) for key, head in (("confidence", "conf."), ("im", "IM"), ("flip_agreement", "flip"),
                                           ("agreement", "agr. ref")) if key != score]
    for column in ("#", "model", f"{score} (ranks)", *(head for _, head in shown), "ATC acc. (95%)", "collapsed"):
        table.add_column(column, justify="left" if column in ("model", "collapsed") else "right")
    for k, r in enumerate(ranked, 1):
        s = r.signals
        atc = "-" if s.atc is None else f"{100 * s.atc:.1f}" + (
            f" ({100 * r.atc_interval[0]:.0f}-{100 * r.atc_interval[1]:.0f})" if r.atc_interval else "")
        lost = [names[i] for i in s.vanished]
        collapsed = (("yes: " + ", ".join(lost[:2]) + (f" +{len(lost) - 2}" if len(lost) > 2 else ""))
                     if r.collapse and lost else "yes" if r.collapse else "")
        table.add_row(str(k), r.path, _f3(r.score), *(_f3(getattr(s, key)) for key, _ in shown), atc, collapsed)
    table_console().print(table)
    for r in ranked:
        if r.collapse:
            typer.echo(f"{r.path} collapsed: {r.collapse}")
    best = next((r for r in ranked if r.collapse is None), None)
    if best is None:
        verdict = "every model collapsed against the reference: ship none of them"
    elif best.score is None:
        verdict = f"no model gives {score}; compare them by the table and class_share.png"
    else:
        verdict = f"ship {best.path} ({score} {best.score:.3f})"
    typer.echo(f"{verdict}; wrote {', '.join(map(str, ranking.written))}")


def _f3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

"""`mslseg train` (source only) and `mslseg adapt` (MSL): thin wrappers over training.run."""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mslseg.architectures import models_help
from mslseg.cli.progress import run_progress
from mslseg.methods import methods_help
from mslseg.runtime.io.media import is_bag, is_video
from mslseg.runtime.signals import exit_code, stopped_by

if TYPE_CHECKING:
    from mslseg.training.resume import RunInterrupted

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file or the name of a shipped one (see docs).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override any config key: --set method.lambda_target=0.2 (repeatable).")]
SourceOpt = Annotated[Path | None, typer.Option(help="Labelled source dataset root.")]
SourceKindOpt = Annotated[str | None, typer.Option(help="Source layout: gta5 | synthia | cityscapes | folder.")]
ValOpt = Annotated[Path | None, typer.Option(help="Labelled target split to evaluate on (e.g. a Cityscapes root).")]
ValKindOpt = Annotated[str | None, typer.Option(help="Layout of --target-val (default cityscapes, split val).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help=f"Architecture: {models_help()}. Default: the config's (deeplabv2). The optimiser recipe follows it (see docs/models.md).")]
BackboneOpt = Annotated[str | None, typer.Option(help="DeepLab-v2's backbone: resnet101 | resnet50 | resnet18.")]
ItOpt = Annotated[int | None, typer.Option(min=1, help="Optimisation steps.")]
BatchOpt = Annotated[int | None, typer.Option(min=1, help="Source (and target) images per step.")]
SizeOpt = Annotated[str | None, typer.Option(help="Resize all images to WxH, e.g. 1024x512.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory to write.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N.")]
ResumeOpt = Annotated[Path | None, typer.Option(help="Continue the run in this directory from its last.pt.")]
InitOpt = Annotated[str | None, typer.Option(help="Weights to start from: an mslseg .pt, a foreign file with --init-format, a SegFormer save_pretrained folder or hf:<hub id>.")]
InitFmtOpt = Annotated[str | None, typer.Option(help="Format of a foreign --init: msl | deeplab-imagenet | torchvision-resnet.")]


# The flags that set config keys, and the keys each sets: one table, read to build the overrides and
# to name, in a message, the flag a user typed instead of the key it set (--size, not source.size).
FLAG_KEYS: dict[str, tuple[str, ...]] = {
    "--source": ("source.root",), "--source-kind": ("source.kind",), "--target": ("target.root",),
    "--target-kind": ("target.kind",), "--topic": ("target.topic",), "--target-val": ("target_val.root", "target_val.kind"),
    "--val-kind": ("target_val.kind",), "--model": ("model.arch",), "--backbone": ("model.backbone",),
    "--iterations": ("train.iterations",), "--batch": ("train.batch_source", "train.batch_target"),
    "--size": ("source.size", "target.size", "target_val.size"), "--out": ("out",),
    "--device": ("train.device",), "--init": ("model.init", "model.init_format"),
    "--init-format": ("model.init_format",), "--method": ("method.target_loss",),
    "--multi-level": ("method.multi_level",), "--single-level": ("method.multi_level",),
    "--no-multi-level": ("method.multi_level",), "--lambda-target": ("method.lambda_target",),
}


class _Typed:
    """The overrides a command line makes, and the flag that made each (`names`)."""

    def __init__(self, fixed: dict[str, Any] | None = None) -> None:
        self.overrides: dict[str, Any] = dict(fixed or {})  # what the command itself sets (train: no target)
        self.names: dict[str, str] = {}

    def flag(self, flag: str, value: Any, keys: tuple[str, ...] | None = None) -> None:
        if value is None:
            return
        for key in keys or FLAG_KEYS[flag]:
            self.overrides[key] = str(value) if isinstance(value, Path) else value
            self.names[key] = flag

    def sets(self, sets: list[str] | None) -> None:
        """--set KEY=VALUE, applied last: an error names its key as the user typed it."""
        from mslseg.training.config import parse_override

        for key, value in (parse_override(s) for s in sets or []):
            self.overrides[key] = value
            self.names[key] = key


def _common(typed: _Typed, *, source, source_kind, target_val, val_kind, model, backbone,
            iterations, batch, size, out, device, init, init_format) -> None:
    model, backbone = _split_full_name(model, backbone)
    for flag, value in (("--source", source), ("--source-kind", source_kind), ("--model", model),
                        ("--backbone", backbone), ("--iterations", iterations), ("--batch", batch),
                        ("--out", out), ("--device", device)):
        typed.flag(flag, value)
    if init is not None:  # a new --init replaces the config's init and its format
        typed.flag("--init", init, ("model.init",))
        typed.overrides["model.init_format"] = init_format
    typed.flag("--init-format", init_format)
    if size is not None:
        for ds in ("source", "target", "target_val"):
            if not (ds in typed.overrides and typed.overrides[ds] is None):  # train drops the target
                typed.flag("--size", size, (f"{ds}.size",))
    if target_val is not None:
        typed.flag("--target-val", target_val, ("target_val.root",))
        typed.overrides["target_val.kind"] = "cityscapes"
        typed.flag("--val-kind", val_kind)
        typed.overrides.setdefault("target_val.split", "val")


def _split_full_name(model: str | None, backbone: str | None) -> tuple[str | None, str | None]:
    """--model deeplabv2-resnet18 (the name the start line and the metadata use) as --model deeplabv2
    --backbone resnet18; a --backbone that says otherwise is an error."""
    from mslseg.architectures import MODELS, ModelRef
    from mslseg.runtime.errors import ConfigError, ModelFormatError

    if model is None:
        return model, backbone
    try:
        ref = ModelRef.parse(model)
    except ModelFormatError:
        return model, backbone  # said where the config is read, with the valid names
    if ref.kind != "builtin" or ref.entry == model or MODELS[ref.entry].named_by != "backbone":
        return model, backbone
    if backbone is not None and backbone != ref.variant:
        raise ConfigError(f"--model {model} names backbone {ref.variant}, --backbone {backbone}: drop one")
    return ref.entry, ref.variant


def _launch(command: str, config: Path | None, typed: _Typed, sets: list[str] | None,
            resume: Path | None) -> None:
    from mslseg.training.config import file_keys, load_config
    from mslseg.training.distributed import distributed_context
    from mslseg.training.loop import run
    from mslseg.training.resume import RunInterrupted, resume_config

    if resume is not None:
        cfg = resume_config(resume, sets or [])
    else:
        typed.sets(sets)
        cfg = load_config(config, typed.overrides, adapt=command == "adapt", names=typed.names)
    main = True
    try:
        with distributed_context(cfg.train.device) as dist:
            main = dist.main
            try:
                with run_progress(command, enabled=dist.main, log_every=cfg.train.log_every) as progress:
                    # what the user typed must be honoured; the rest may follow the network (its aux head)
                    result = run(cfg, resume=resume is not None, dist=dist, on_start=progress.on_start,
                                 on_step=progress.on_step, explicit=frozenset(typed.names),
                                 from_config=file_keys(config) if resume is None and config is not None else frozenset())
            except RunInterrupted as stop:  # said before the ranks part: torchrun stops a rank that lingers
                if main:
                    typer.echo(_interrupted(command, stop), err=True)
                raise typer.Exit(stop.exit_code) from None  # 130 for Ctrl-C, 143 for SIGTERM: schedulers see why
    except KeyboardInterrupt as stop:  # during setup: StopRequested for a signal, else a plain Ctrl-C
        signum = getattr(stop, "signum", signal.SIGINT)
        kept = f"; {Path(cfg.out) / 'last.pt'} is unchanged" if resume is not None else ""
        if main:
            typer.echo(f"{stopped_by(signum)} before the first step: nothing was trained{kept}", err=True)
        raise typer.Exit(exit_code(signum)) from None
    if not main:
        return
    if result.iterations < cfg.train.iterations:  # train.stop_after
        typer.echo(f"wrote {result.run_dir}/last.pt after {result.iterations} of {cfg.train.iterations} iterations; "
                   f"continue with: mslseg {command} --resume {shlex.quote(str(result.run_dir))}")
        return
    miou = (f", target mIoU {100 * result.final_miou:.2f} (best {100 * result.best_miou:.2f}; "
            f"{result.eval_protocol})" if result.final_miou is not None else "")
    if result.best_by:
        miou += f"; best.pt: {result.best_by}"
    typer.echo(f"wrote {result.run_dir}/last.pt and best.pt after {result.iterations} iterations{miou}")


def _interrupted(command: str, stop: RunInterrupted) -> str:
    """Two lines: where the run stopped (and on which signal) and what last.pt holds; the command
    that continues it."""
    head = f"{stopped_by(stop.signum)} at iteration {stop.iteration} of {stop.iterations}"
    if stop.saved is None:
        return f"{head}, before the first checkpoint: nothing to resume\nrun the same command again to start over"
    again = f"mslseg {command} --resume {shlex.quote(str(stop.run_dir))}"
    torchrun = " (under torchrun, as before)" if os.environ.get("WORLD_SIZE", "1") != "1" else ""
    return f"{head}; {stop.run_dir / 'last.pt'} holds iteration {stop.saved}\ncontinue with: {again}{torchrun}"


def train(
    config: ConfigOpt = None, source: SourceOpt = None, source_kind: SourceKindOpt = None,
    target_val: ValOpt = None, val_kind: ValKindOpt = None, model: ModelOpt = None, backbone: BackboneOpt = None,
    iterations: ItOpt = None, batch: BatchOpt = None, size: SizeOpt = None, out: OutOpt = None,
    device: DeviceOpt = None, init: InitOpt = None, init_format: InitFmtOpt = None,
    multi_level: Annotated[bool | None, typer.Option(help="Also train the aux head (x0.1 CE), as the multi-level recipe starts from. Default: on where the network has an aux head.")] = None,
    resume: ResumeOpt = None, set_: SetOpt = None,
) -> None:
    """Train on labelled source data only (the starting point of adaptation)."""
    # source only: no target images at all, not even for BatchNorm statistics; the aux head learns
    # unless --no-multi-level, or the network has none (the run follows it and says so)
    typed = _Typed({"method.target_loss": "none", "method.multi_level": True, "target": None})
    if multi_level is not None:
        typed.flag("--multi-level" if multi_level else "--no-multi-level", multi_level)
    _common(typed, source=source, source_kind=source_kind, target_val=target_val, val_kind=val_kind,
            model=model, backbone=backbone, iterations=iterations, batch=batch, size=size, out=out, device=device,
            init=init, init_format=init_format)
    _launch("train", config, typed, set_, resume)


def adapt(
    config: ConfigOpt = None, source: SourceOpt = None, source_kind: SourceKindOpt = None,
    target: Annotated[Path | None, typer.Option(help="Unlabelled target data: a dataset root, an image folder, video file(s)/glob, or robot bag(s) with --topic.")] = None,
    target_kind: Annotated[str | None, typer.Option(help="Target layout: cityscapes | folder | video | bag | nthu.")] = None,
    topic: Annotated[str | None, typer.Option(metavar="NAME", help="(bag targets) The image topic to sample frames from, as for videos: every 30th, at least 100 per bag.")] = None,
    target_val: ValOpt = None, val_kind: ValKindOpt = None,
    method: Annotated[str | None, typer.Option(help=f"Target loss: {methods_help()} (none: BN statistics only). Default: the config's, else iw-msl with multi-level guidance where the model has an aux head.")] = None,
    multi_level: Annotated[bool | None, typer.Option("--multi-level/--single-level", help="Multi-level self-produced guidance on the aux head (default: the config's; with the default method, on where the model has an aux head). A network without an aux head runs single-level; asking for multi-level there is an error.")] = None,
    lambda_target: Annotated[float | None, typer.Option(min=0.0, help="Weight of the target loss (default: the config's, else the paper's: 0.1; 0.09 with multi-level).")] = None,
    model: ModelOpt = None, backbone: BackboneOpt = None, iterations: ItOpt = None, batch: BatchOpt = None,
    size: SizeOpt = None, out: OutOpt = None, device: DeviceOpt = None, init: InitOpt = None, init_format: InitFmtOpt = None,
    resume: ResumeOpt = None, set_: SetOpt = None,
) -> None:
    """Adapt a source-trained model to unlabelled target images or videos (default: IW-MSL + multi-level)."""
    typed = _Typed()
    typed.flag("--method", method)
    if multi_level is not None:
        typed.flag("--multi-level" if multi_level else "--single-level", multi_level)
    typed.flag("--lambda-target", lambda_target)
    if target is not None:
        typed.flag("--target", target)
        typed.overrides["target.labelled"] = False
        typed.overrides["target.kind"] = target_kind_for(target)
        typed.flag("--target-kind", target_kind)
        if target_val is None and not any(s.split("=")[0].strip().startswith("target_val") for s in set_ or []):
            # the config's target_val belongs to the config's target, not this one: without labels of
            # this target, the run validates without labels (docs/label-free.md)
            typed.overrides["target_val"] = None
    typed.flag("--topic", topic)
    _common(typed, source=source, source_kind=source_kind, target_val=target_val, val_kind=val_kind,
            model=model, backbone=backbone, iterations=iterations, batch=batch, size=size, out=out, device=device,
            init=init, init_format=init_format)
    _launch("adapt", config, typed, set_, resume)


def target_kind_for(target: Path) -> str:
    """The target layout `--target` names when --target-kind is not given: a video file or a glob of
    videos is read as video, a bag file, rosbag2 folder or glob of bags as bag (runtime/io/media.py says
    which suffixes), anything else as a Cityscapes root."""
    return "video" if is_video(target) else "bag" if is_bag(target) else "cityscapes"

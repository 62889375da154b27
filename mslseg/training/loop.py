"""`run(cfg)`: source training and MSL adaptation, one loop for every method, resumable."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import Subset

from mslseg import __version__
from mslseg.architectures import MODELS, architecture, is_factory
from mslseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mslseg.classes import palette_for
from mslseg.data import build_dataset
from mslseg.data.video_frames import VideoFrames
from mslseg.methods import METHODS
from mslseg.models.base import SegModel
from mslseg.runtime.errors import ConfigError, TrainingError
from mslseg.runtime.io.atomic import atomic_write_text, remove_temporary, temporaries
from mslseg.runtime.metadata import ModelMeta, Normalization
from mslseg.runtime.sizes import Size
from mslseg.training.config import ModelConfig, OptimConfig, RunConfig, recipe_lambda_target, to_dict
from mslseg.training.device import amp_dtype, capture_rng, rank_device, resolve_device
from mslseg.training.evaluate import evaluate
from mslseg.training.label_free_run import LabelFreeValidation, split_holdout
from mslseg.training.rare_class import RareClassSampler, source_class_counts
from mslseg.training.resume import (
    Position,
    RunInterrupted,
    StopRequested,
    StopSignals,
    gather_rng,
    rebatch_for_world,
    restore_training,
    stop_signals,
    wait_for_peers,
)
from mslseg.training.run_log import RunStart, append_metrics, log_record, plot_run, tensorboard_writer, truncate_metrics
from mslseg.training.sampling import stream_loader
from mslseg.training.feature_distance import FeatureDistance, class_indices, encoder_origin, refuse_without_encoder
from mslseg.training.self_training import SelfTrainer, mic_block
from mslseg.training.step import StepStats, adapt_step, build_optimizer, set_poly_lr

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """This process's place in a distributed run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the rank on its machine: its GPU under distributed CUDA

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class RunResult:
    run_dir: Path
    iterations: int
    final_miou: float | None = None
    best_miou: float | None = None
    best_by: str = ""  # without target labels: what picked best.pt ("class_confidence 0.71 at iteration 400 ...")
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_protocol: str = ""  # how final_miou was scored (`protocol_of`), for the line that shows it


def build_model(cfg: ModelConfig, class_names: tuple[str, ...],
                train_size: Size | None = None, interpolation: str = "bicubic", *,
                resume: tuple[dict[str, Any], str] | None = None) -> tuple[SegModel, ModelMeta]:
    """The model to train: from `cfg.init` (own or foreign checkpoint, a SegFormer folder or hf:<id>)
    or freshly initialised as `cfg.arch` says (mslseg.architectures). `resume`: (last.pt's data, its
    path), which holds the model: the init need not exist any more."""
    n = len(class_names)
    arch = architecture(cfg.arch)
    factory = cfg.arch if is_factory(cfg.arch) else None  # the config names it: the caller trusts it
    headless = None  # a pretrained folder without a segmentation head (an ImageNet encoder)
    if resume is not None:
        model, meta = model_from_checkpoint(*resume, factory=factory)
    elif cfg.init is None:
        options = {k: getattr(cfg, k) for k in arch.options if getattr(cfg, k) is not None}  # model.backbone, ...
        model = arch.build(num_classes=n, multi_level=cfg.multi_level, **options)
        meta = ModelMeta(num_classes=n, class_names=class_names, palette=palette_for(class_names),
                         normalization=Normalization.named(cfg.normalization))
    elif cfg.init_format:
        if arch.foreign_init is None:
            takers = ", ".join(name for name, a in MODELS.items() if a.foreign_init)
            other = ", or use a save_pretrained folder / hf:<id> as model.init" if arch.pretrained else ""
            raise ConfigError(f"model.init_format imports weights of {takers}, not {cfg.arch}; drop it{other}")
        model, meta = arch.foreign_init(cfg.init, cfg.init_format, num_classes=n, multi_level=cfg.multi_level)
    elif arch.pretrained is not None and not cfg.init.endswith(".pt"):  # a save_pretrained folder or hf:<id>
        model, names = arch.pretrained(cfg.init, num_classes=n, multi_level=cfg.multi_level)
        headless = names is None  # an encoder-only folder: ImageNet's
        if names is not None and names != class_names:
            log.info("%s names its classes %s; the data's names are used", cfg.init, ", ".join(names))
        meta = ModelMeta(num_classes=n, class_names=class_names, palette=palette_for(class_names),
                         normalization=Normalization.named(cfg.normalization))
    else:
        model, meta = model_from_checkpoint(load_checkpoint(cfg.init), cfg.init, factory=factory)
        if model.arch != cfg.arch:
            raise ConfigError(f"{cfg.init} holds a {model.arch} model, but model.arch is {cfg.arch}; "
                              f"pass --model {model.arch} (or model.arch: {model.arch})")
    if model.num_classes != n:
        raise ConfigError(
            f"the model predicts {model.num_classes} classes but the data has {n}; "
            "use a checkpoint or class set that match"
        )
    model.encoder_from = encoder_origin(cfg.init, cfg.init_format, headless)
    model.set_bn_mode(cfg.bn)
    meta = meta.with_(class_names=class_names, palette=palette_for(class_names),
                      arch=model_name(model), train_size=train_size,
                      interpolation=interpolation,
                      mslseg_version=__version__)
    return model, meta


def model_name(model: SegModel) -> str:
    """What the metadata and the start line call the model: deeplabv2-resnet18, segformer-b0, python:m:f."""
    return getattr(model, "name", None) or model.arch


def run_size(cfg: RunConfig) -> tuple[Size | None, str]:
    """The size (and resize method) the model is to run at: the scale it was evaluated and adapted at.

    The target's validation split, else the target, else the source: the first with a `size`
    (a crop keeps the scale, so it does not count). None: frames at their own size.
    """
    for data in (cfg.target_val, cfg.target, cfg.source):
        if data is not None and data.size:
            return data.size, data.interpolation
    return None, cfg.source.interpolation


@dataclass
class _Setup:
    """Everything a run builds before its first step."""

    cfg: RunConfig
    device: torch.device
    model: SegModel
    meta: ModelMeta
    source: Any
    target: Any | None
    target_val: Any | None
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    channels_last: bool
    start: int = 0
    best: float | None = None
    self_training: SelfTrainer | None = None  # the mean teacher of the self-training methods
    feature_distance: FeatureDistance | None = None  # DAFormer's ImageNet feature distance (method.lambda_fd)
    warmup: int = 0  # lr warm-up iterations
    label_free: LabelFreeValidation | None = None  # no target labels: held-out frames pick best.pt
    best_iteration: int | None = None  # the iteration best.pt holds (label-free runs)
    origin: dict[str, str] = field(default_factory=dict)  # config key -> "command line" | "config" (else the recipe)

    @property
    def deployed(self) -> SegModel:
        """The network evaluations score and best.pt holds: the teacher where method.deploy says so."""
        if self.self_training is not None and self.cfg.method.deploy == "teacher":
            return self.self_training.teacher.model
        return self.model


def run(cfg: RunConfig, *, resume: bool = False, dist: Dist | None = None,
        on_step: Callable[[StepStats], None] | None = None,
        on_start: Callable[[RunStart], None] | None = None, explicit: frozenset[str] = frozenset(),
        from_config: frozenset[str] = frozenset()) -> RunResult:
    """Train/adapt as `cfg` says, writing the run directory; returns where and how it ended.

    `explicit`: the config keys the caller set on purpose (the CLI's flags and --set). A network
    without an auxiliary head runs single-level (and the start line says so) unless
    `method.multi_level` is among them: an explicit multi-level that cannot be honoured is an error.
    `from_config`: the keys the config file set; the start line says where the method's settings
    came from (the command line, the config, else the method's recipe).

    With `resume`, continues from `cfg.out/last.pt` (model, optimiser, RNG, sample position).
    `on_start` gets a `RunStart` once the model and data are ready, `on_step` the `StepStats` of
    every step, on every rank.

    Ctrl-C (SIGINT) and SIGTERM (a scheduler's preemption) stop the run at a whole step: the step
    under way finishes, last.pt is written at it, and `RunInterrupted` says what last.pt holds and
    which signal stopped the run. In a single process an evaluation is cut short at once; under
    DDP every rank stops after the same step (`resume.agreed_stop`) and only rank 0 writes. A
    second Ctrl-C does not wait (the last whole checkpoint stays); a repeated SIGTERM is ignored.
    Signal handlers are installed only in the main thread, over Python's defaults.
    """
    dist = dist or Dist()
    out = Path(cfg.out)
    last = out / "last.pt"
    if resume and not last.is_file():
        raise ConfigError(f"cannot resume: {last} does not exist; start a new run instead")
    if not resume and last.exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    with stop_signals() as stops:
        saved = load_checkpoint(last) if resume else None
        s = _setup(cfg, dist, saved, explicit)
        s.origin = {key: "command line" for key in explicit} | {key: "config" for key in from_config - explicit}
        cfg = s.cfg
        net = prepare_net(s.model, cfg, s.device, dist)
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            for stale in temporaries(out):  # temporaries of a write that a kill interrupted
                remove_temporary(stale)
            atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
            truncate_metrics(out / "metrics.jsonl", s.start)
            if s.label_free is not None and s.start == 0 and s.label_free.reference_iteration == 0:
                # the starting model: where the curves start, and best.pt until adaptation scores higher
                ref, name = s.label_free.reference, cfg.validation.score
                value = ref.score(name)
                append_metrics(out / "metrics.jsonl", {"iteration": 0, "label_free": ref.to_dict() | {
                    "score": name, "value": value}, "reference": True})
                if value is not None:
                    s.best, s.best_iteration = value, 0
                    save_checkpoint(out / "best.pt", s.deployed, s.meta)
        if on_start is not None:
            on_start(_run_start(s, dist))
        pos = Position(s.start, s.start if resume else None)
        board = tensorboard_writer(out) if dist.main else None
        try:
            result = _train(s, net, dist, board, pos, on_step, stops)
            if result.iterations == cfg.train.iterations and dist.main:
                if s.target_val is None and s.label_free is None:
                    save_checkpoint(out / "best.pt", s.deployed, s.meta)
                elif s.label_free is not None and s.best_iteration is None:  # no evaluation could pick one
                    save_checkpoint(out / "best.pt", s.deployed, s.meta)
                    result.best_by = f"the last iteration ({s.label_free.unpicked()})"
                plot_run(out)
        except KeyboardInterrupt as stop:  # the agreed signal, else this process's first (a second Ctrl-C)
            signum = getattr(stop, "signum", None) or stops.signum or signal.SIGINT
            raise _interrupted(s, dist, pos, signum, agreed=getattr(stop, "agreed", False)) from None
        finally:
            if board is not None:
                board.close()
    return result


def _train(s: _Setup, net: torch.nn.Module, dist: Dist, board: Any, pos: Position,
           on_step: Callable[[StepStats], None] | None, stops: StopSignals) -> RunResult:
    """The steps of this invocation, with their logging, evaluations and checkpoints.

    A stop signal is held to the end of the step that it arrives in (its logging and checkpoint
    included) and acted on there; a single process lets it cut an evaluation short.
    """
    cfg, out = s.cfg, Path(s.cfg.out)
    last = out / "last.pt"
    src_iter = _loader(s, s.source, cfg.train.batch_source, cfg.train.seed, dist, pick=_rare_class_pick(s, dist))
    tgt_iter = _loader(s, s.target, cfg.train.batch_target, cfg.train.seed + 1, dist) if s.target else None
    result = RunResult(out, s.start, best_miou=s.best if s.label_free is None else None)
    total, end = cfg.train.iterations, _stop(cfg, s.start)
    images_per_step = _images_per_step(s, dist)
    net.train()
    t0, seen = time.perf_counter(), 0
    stops.holding = True
    for it in range(s.start, end):
        lr = set_poly_lr(s.optimizer, cfg.optim, it, total, s.warmup)
        source, target = next(src_iter), next(tgt_iter) if tgt_iter else None
        pos.in_step = True
        stats = adapt_step(net, s.optimizer, source, target, cfg.method, iteration=it + 1, lr=lr,
                           device=s.device, amp_dtype=s.amp_dtype, scaler=s.scaler,
                           channels_last=s.channels_last, self_training=s.self_training,
                           feature_distance=s.feature_distance)
        pos.in_step, pos.done = False, it + 1
        if not stats.finite:
            raise TrainingError(f"the loss became non-finite at iteration {it + 1} ({stats.to_dict()}); "
                                f"{_last_good(last)}")
        seen += 1
        if on_step is not None:
            on_step(stats)
        done = it + 1
        if dist.main and (done % cfg.train.log_every == 0 or done == total):
            record = stats.to_dict() | {"images_per_s": seen * images_per_step / max(time.perf_counter() - t0, 1e-9)}
            log_record(out, board, record, result)
            t0, seen = time.perf_counter(), 0
        due = (cfg.train.eval_every and done % cfg.train.eval_every == 0) or done == total
        collapsed = None
        if dist.main and due and (s.target_val is not None or s.label_free is not None):
            with stops.released() if dist.world == 1 else contextlib.nullcontext():
                if s.target_val is not None:
                    _evaluate(s, out, board, done, result)
                else:
                    collapsed = _evaluate_label_free(s, out, board, done, result)
            net.train()
        if due and s.label_free is not None and dist.world > 1:  # every rank: a collapse stops them together
            collapsed = _from_rank0(collapsed)
        if collapsed:
            if dist.main:
                plot_run(out)  # how it came to the collapse
            if dist.world > 1:
                wait_for_peers()  # rank 0 draws first: torchrun stops the others when one rank leaves
            raise TrainingError(collapsed)
        if done % cfg.train.checkpoint_every == 0 or done in (total, end):
            _save_last(s, last, done, dist)  # every rank: each gives its RNG state, rank 0 writes
            pos.saved = done
        # every rank, every step: the agreement is a collective (the run's end needs no stop)
        if done < end and (signum := stops.pending(dist.world > 1, s.device)):
            raise StopRequested(signum, agreed=dist.world > 1)
    result.iterations = end
    return result


def _interrupted(s: _Setup, dist: Dist, pos: Position, signum: int, *, agreed: bool) -> RunInterrupted:
    """Writes last.pt at the last whole step if it is newer than the one on disk; says what it holds.

    `agreed`: all ranks stopped after the same step; they wait for rank 0's write, then leave together.
    """
    out = Path(s.cfg.out)
    # agreed: every rank is here after the same step, so all can give their RNG states
    if (dist.main or agreed) and not pos.in_step and pos.done > 0 and pos.done != pos.saved:
        try:
            _save_last(s, out / "last.pt", pos.done, dist, gather=agreed or dist.world == 1)
            pos.saved = pos.done
        except KeyboardInterrupt:  # a second Ctrl-C while saving: the write is atomic, the old last.pt stays
            pass
    if agreed:
        wait_for_peers()
    return RunInterrupted(out, pos.done, pos.saved, s.cfg.train.iterations, signum)


def _run_start(s: _Setup, dist: Dist) -> RunStart:
    cfg = s.cfg
    target = s.target.dataset if isinstance(s.target, Subset) else s.target  # held-out frames split off
    frames = getattr(target, "frames", None)
    amp = f" {str(s.amp_dtype).removeprefix('torch.')}" if s.amp_dtype is not None else ""
    return RunStart(
        target_loss=cfg.method.target_loss, multi_level=cfg.method.multi_level,
        lambda_target=cfg.method.lambda_target, arch=model_name(s.model),
        aux_head=s.model.has_aux, device=f"{s.device}{amp}", world=dist.world,
        iterations=cfg.train.iterations, start=s.start, stop=_stop(cfg, s.start), source_images=len(s.source),
        target_images=len(s.target) if s.target is not None else None,
        target_video=(frames.available, frames.videos) if isinstance(frames, VideoFrames) else None,
        val_images=len(s.target_val) if s.target_val is not None else None,
        images_per_step=_images_per_step(s, dist), run_dir=Path(cfg.out),
        validation=(f"best.pt by {cfg.validation.score} on the held-out frames (no labels), collapse judged "
                    f"against {s.label_free.reference_from()}" if s.label_free is not None else ""),
        heldout_images=len(s.label_free.heldout) if s.label_free is not None else 0,
        optimizer=describe_optim(cfg.optim) + (f", warm-up {s.warmup} it{_origin(s, 'optim.warmup_iters')}"
                                               if s.warmup else ""),
        self_training=", ".join(filter(None, (describe_self_training(s), describe_feature_distance(s)))))


def describe_feature_distance(s: _Setup) -> str:
    """'ImageNet feature distance x0.005 on 10 classes (config)': DAFormer's loss as the run has it."""
    if s.feature_distance is None:
        return ""
    m = s.cfg.method
    on = f"{len(m.fd_classes)} classes" if m.fd_classes else "all classes"
    to = "ImageNet" if s.model.encoder_from == "imagenet" else f"the start model's (not ImageNet's: {s.cfg.model.init})"
    return (f"feature distance to {to} encoder x{m.lambda_fd:g} on {on}"
            f"{_origin(s, 'method.lambda_fd', 'method.fd_classes', 'method.fd_min_ratio')}")


def describe_self_training(s: _Setup) -> str:
    """'teacher alpha 0.999, pseudo-labels >= 0.968, ClassMix, rare class sampling T 0.01, deploys the
    teacher': the mean teacher's settings as the method entry and the config chose them."""
    if s.self_training is None:
        return ""
    m, spec = s.cfg.method, s.self_training.spec

    def o(*keys: str) -> str:
        return _origin(s, *(f"method.{k}" for k in keys))

    parts = [f"teacher alpha {m.teacher_alpha:g}{o('teacher_alpha')}",
             f"pseudo-labels >= {m.pseudo_threshold:g}{o('pseudo_threshold')}", "ClassMix + jitter/blur"]
    if m.pseudo_ignore_top or m.pseudo_ignore_bottom:
        parts.append(f"ignoring {m.pseudo_ignore_top} top / {m.pseudo_ignore_bottom} bottom rows"
                     f"{o('pseudo_ignore_top', 'pseudo_ignore_bottom')}")
    if spec.rare_class:
        parts.append(f"rare class sampling T {m.rcs_temperature:g}{o('rcs_temperature')}")
    if spec.mic:
        size = (s.cfg.target.crop or s.cfg.target.size) if s.cfg.target is not None else None
        block = f"{mic_block((size.height, size.width), m.mic_block)}-px" if size else "1/8-side"
        parts.append(f"MIC {m.mic_ratio:g} of {block} blocks x{m.lambda_mic:g}{o('mic_ratio', 'mic_block', 'lambda_mic')}")
    parts.append(f"deploys the {m.deploy}{o('deploy')}")
    return ", ".join(parts)


def _origin(s: _Setup, *keys: str) -> str:
    """' (command line)' or ' (config)' where one of `keys` was set there; '' where the recipe chose."""
    where = {s.origin[k] for k in keys if k in s.origin}
    return f" ({'command line' if 'command line' in where else 'config'})" if where else ""


def describe_optim(optim: OptimConfig) -> str:
    """'adamw lr 0.0006 (heads x10)': the optimiser the architecture's recipe and the config chose."""
    scale = f" = {optim.lr:g} x {optim.lr_scale:g}" if optim.lr_scale != 1 else ""
    return f"{optim.optimizer} lr {optim.lr * optim.lr_scale:g}{scale} (heads x{optim.head_lr_mult:g})"


def _stop(cfg: RunConfig, start: int) -> int:
    """The iteration this invocation ends at: the run's end, or sooner with train.stop_after."""
    total = cfg.train.iterations
    return total if cfg.train.stop_after is None else min(total, start + cfg.train.stop_after)


def _images_per_step(s: _Setup, dist: Dist) -> int:
    return (s.cfg.train.batch_source + (s.cfg.train.batch_target if s.target is not None else 0)) * dist.world


def _setup(cfg: RunConfig, dist: Dist, saved: dict[str, Any] | None,
           explicit: frozenset[str] = frozenset()) -> _Setup:
    name, note = rank_device(cfg.train.device, world=dist.world, local_rank=dist.local_rank,
                             cuda_available=torch.cuda.is_available())
    if note and dist.main:
        log.warning("%s", note)
    device = resolve_device(name)
    torch.manual_seed(cfg.train.seed)
    if saved is not None:
        cfg = rebatch_for_world(cfg, saved, dist.world)
    probe = build_dataset(cfg.source, _normalization(cfg), train=True, seed=cfg.train.seed)
    class_names = tuple(probe.class_names)
    model, meta = build_model(cfg.model, class_names, *run_size(cfg),
                              resume=(saved, f"{cfg.out}/last.pt") if saved is not None else None)
    if not model.has_aux and cfg.method.multi_level:
        of = f" of {cfg.model.init}" if cfg.model.init else ""
        cfg = follow_network(cfg, f"the network {model_name(model)}{of}", explicit)
    # the normalisation is the initial model's: datasets are built with it
    norm = meta.normalization
    source = probe if norm == _normalization(cfg) else build_dataset(cfg.source, norm, train=True, seed=cfg.train.seed)
    target = build_dataset(cfg.target, norm, train=True, seed=cfg.train.seed + 1) if cfg.target else None
    target_val = build_dataset(cfg.target_val, norm, train=False) if cfg.target_val else None
    heldout = None
    if target is not None and target_val is None and cfg.validation.holdout > 0:
        target, heldout = split_holdout(target, build_dataset(cfg.target, norm, train=False), cfg.validation.holdout)
    if target_val is not None and tuple(target_val.class_names) != class_names:
        raise ConfigError(f"target_val has classes {target_val.class_names}, the source {class_names}")

    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
    channels_last = cfg.train.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device, cfg.train.amp)
    s = _Setup(cfg, device, model, meta, source, target, target_val, build_optimizer(model, cfg.optim),
               dtype, torch.amp.GradScaler("cuda") if dtype == torch.float16 else None, channels_last)
    if saved is not None:
        own = device.index if dist.world > 1 and device.type == "cuda" else None
        s.start, s.best = restore_training(saved, s.model, s.optimizer, s.scaler, own_cuda=own,
                                           rank=dist.rank, world=dist.world)
    if target is not None:
        s.self_training = SelfTrainer.for_run(s.model, cfg.method, norm, cfg.train.seed, dist.rank, bn=cfg.model.bn)
    if s.self_training is not None:
        s.self_training.to(device)
        if saved is not None:
            teacher = (saved.get("training") or {}).get("teacher")
            if teacher is None:
                raise ConfigError(f"{cfg.out}/last.pt holds no teacher, so it was not written by a "
                                  f"{cfg.method.target_loss} run; start a new run with --init {cfg.out}/last.pt")
            s.self_training.load_state_dict(teacher)
    if cfg.method.lambda_fd > 0:  # after the teacher: its copy of the student must not take the hook
        s.feature_distance = _feature_distance(cfg, s.model, class_names, saved).to(device)
    s.warmup = cfg.optim.warmup_iters or 0  # the method's, resolved by load_config (method_warmup)
    if heldout is not None:
        s.label_free = LabelFreeValidation(heldout, build_dataset(cfg.source, norm, train=False),
                                           meta.num_classes, class_names, device)
        state = (saved.get("training") or {}).get("label_free") if saved is not None else None
        if state:
            s.label_free.load(state)
            s.best_iteration = state.get("best_iteration")
            s.best = saved["training"].get("best_score")
        elif dist.main:  # the reference: the model the run starts from, if it knows the source
            s.label_free.start(s.deployed)
    return s


def _feature_distance(cfg: RunConfig, model: SegModel, class_names: tuple[str, ...],
                      saved: dict[str, Any] | None) -> FeatureDistance:
    """The frozen encoder the run started from (from last.pt on resume) and DAFormer's loss on it."""
    m = cfg.method
    if saved is None:
        refuse_without_encoder(model.encoder_from, model_name(model))
    fd = FeatureDistance(model, weight=m.lambda_fd, classes=class_indices(m.fd_classes, class_names),
                         min_ratio=m.fd_min_ratio)
    if saved is not None:
        state = (saved.get("training") or {}).get("fd_reference")
        if state is None:
            raise ConfigError(f"{cfg.out}/last.pt holds no feature distance reference encoder, so it was written "
                              "without method.lambda_fd; resume with --set method.lambda_fd=0, or start a new run")
        fd.load_state_dict(state)
        model.encoder_from = saved["training"].get("encoder_from")
    return fd


def follow_network(cfg: RunConfig, what: str, explicit: frozenset[str]) -> RunConfig:
    """`cfg` single-level for a network without an auxiliary head, unless multi-level was asked for.

    lambda_T follows too where it is the multi-level recipe's and was not set on purpose."""
    if "method.multi_level" in explicit:
        raise ConfigError(f"{what} has no auxiliary head, and multi-level guidance (and the aux source loss) "
                          "needs one: use --single-level (adapt) or --no-multi-level (train), or drop "
                          "method.multi_level=true")
    log.info("%s has no auxiliary head: the run is single-level", what)
    method = dataclasses.replace(cfg.method, multi_level=False)
    if "method.lambda_target" not in explicit and method.lambda_target == recipe_lambda_target(True):
        method = dataclasses.replace(method, lambda_target=recipe_lambda_target(False))
    return dataclasses.replace(cfg, method=method)


def _loader(s: _Setup, dataset: Any, batch: int, seed: int, dist: Dist, pick: Callable[[int], int] | None = None):
    return stream_loader(dataset, batch, seed=seed, start=s.start * batch * dist.world,
                         workers=s.cfg.train.workers, rank=dist.rank, world=dist.world,
                         pin_memory=s.device.type == "cuda", pick=pick)


def _rare_class_pick(s: _Setup, dist: Dist) -> Callable[[int], int] | None:
    """The source image at each global sample position under rare class sampling, or None."""
    spec = METHODS[s.cfg.method.target_loss].self_training
    if spec is None or not spec.rare_class or s.target is None:
        return None
    counts = source_class_counts(s.source, s.meta.num_classes, Path(s.cfg.out), write=dist.main)
    sampler = RareClassSampler(counts, s.cfg.method.rcs_temperature)
    seed = s.cfg.train.seed
    return lambda position: sampler.indices_at(seed, [position])[0]


def _evaluate(s: _Setup, out: Path, board: Any, done: int, result: RunResult) -> None:
    """Scores the deployed network (`_Setup.deployed`); with a teacher, the other network too, so
    that which one to deploy stays a measurement (metrics.jsonl: "eval" and "eval_other")."""
    def score(net: SegModel):
        return evaluate(net, s.target_val, device=s.device, num_classes=s.meta.num_classes,
                        class_names=tuple(s.meta.class_names), amp_dtype=s.amp_dtype)[0]

    scores = score(s.deployed)
    record: dict[str, Any] = {"iteration": done, "eval": scores.to_dict() | {"protocol": scores.protocol}}
    if s.self_training is not None:
        other = "student" if s.cfg.method.deploy == "teacher" else "teacher"
        record["eval"]["network"] = s.cfg.method.deploy
        other_scores = score(s.model if other == "student" else s.self_training.teacher.model)
        record["eval_other"] = {"network": other, "miou": other_scores.miou}
        if board is not None:
            board.add_scalar(f"eval/miou_{other}", other_scores.miou, done)
    append_metrics(out / "metrics.jsonl", record)
    result.final_miou, result.eval_protocol = scores.miou, scores.protocol
    if board is not None:
        board.add_scalar("eval/miou", scores.miou, done)
    if s.best is None or scores.miou > s.best:
        s.best = result.best_miou = scores.miou
        save_checkpoint(out / "best.pt", s.deployed, s.meta)


def _from_rank0(message: str | None) -> str | None:
    """Rank 0's `message`, on every rank (a collective)."""
    import torch.distributed as tdist

    box = [message]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _evaluate_label_free(s: _Setup, out: Path, board: Any, done: int, result: RunResult) -> str | None:
    """No target labels: the label-free signals of the deployed network on the held-out frames;
    `validation.score` picks best.pt, and a collapse never becomes it. Returns the line that stops
    the run at a collapse (None: go on; validation.stop_on_collapse off only warns)."""
    lf, name = s.label_free, s.cfg.validation.score
    other = None
    if s.self_training is not None:
        other = s.model if s.cfg.method.deploy == "teacher" else s.self_training.teacher.model
    signals = lf.measure(s.deployed, other=other)
    # a run that started from a model that did not know the source takes its reference now, if it can
    became = lf.take_reference(signals, done)
    # before there is a reference nothing is judged: the model does not know the source yet
    value = signals.score(name) if lf.reference is not None else None
    collapsed = lf.collapse(signals)
    record: dict[str, Any] = {"iteration": done, "label_free": signals.to_dict() | {"score": name, "value": value}}
    if became:
        record["reference"] = True
    if collapsed:
        record["collapse"] = collapsed
    append_metrics(out / "metrics.jsonl", record)
    if board is not None:
        for key in ("confidence", "entropy", "im", "flip_agreement", "class_confidence", "atc"):
            if getattr(signals, key) is not None:
                board.add_scalar(f"label_free/{key}", getattr(signals, key), done)
    if collapsed:
        kept = ("best.pt holds the model the run started from, which scored higher than every evaluation "
                "since" if s.best_iteration == 0 else f"best.pt holds iteration {s.best_iteration}, from before it"
                if s.best_iteration is not None else "no healthy checkpoint was kept: use the model you started from")
        if s.cfg.validation.stop_on_collapse:
            return (f"adaptation collapsed by iteration {done}: {collapsed}; {kept}. Lower method.lambda_target "
                    "or try another method (validation.stop_on_collapse: false runs on)")
        log.warning("adaptation collapsed by iteration %d: %s; %s", done, collapsed, kept)
        return None
    if value is not None and (s.best is None or value > s.best):
        s.best, s.best_iteration = value, done
        save_checkpoint(out / "best.pt", s.deployed, s.meta)
    result.best_by = best_by(s)
    return None


def best_by(s: _Setup) -> str:
    """What picked best.pt in a label-free run, for the last line ("" before anything did)."""
    if s.best_iteration is None:
        return ""
    at = ("iteration 0, the model the run started from (no evaluation scored higher: adaptation did not help "
          "by this score)" if s.best_iteration == 0 else f"iteration {s.best_iteration}")
    return (f"{s.cfg.validation.score} {s.best:.3f} at {at} on {len(s.label_free.heldout)} held-out target frames, "
            "no labels used")


def _save_last(s: _Setup, last: Path, done: int, dist: Dist, *, gather: bool = True) -> None:
    """Rank 0 writes last.pt with every rank's RNG states (`gather`: a collective, all ranks call it)."""
    ranks = gather_rng(dist.world) if gather else None
    if gather and dist.world > 1 and s.self_training is not None:
        _check_teachers_agree(s.self_training, done, s.device)
    if not dist.main:
        return
    if not all(torch.isfinite(t).all() for t in s.model.state_dict().values() if t.is_floating_point()):
        raise TrainingError(f"the weights became non-finite by iteration {done}; {_last_good(last)}")
    training = {"iteration": done, "optimizer": s.optimizer.state_dict(), "rng": capture_rng(),
                "scaler": s.scaler.state_dict() if s.scaler else None,
                "best_score" if s.label_free is not None else "best_miou": s.best,
                "world": dist.world, "config": to_dict(s.cfg),
                **({"rng_ranks": ranks} if ranks and dist.world > 1 else {}),
                **({"teacher": s.self_training.state_dict()} if s.self_training is not None else {}),
                **({"fd_reference": s.feature_distance.state_dict(), "encoder_from": s.model.encoder_from}
                   if s.feature_distance is not None else {}),
                **({"label_free": s.label_free.state() | {"best_iteration": s.best_iteration}}
                   if s.label_free is not None else {})}
    save_checkpoint(last, s.model, s.meta, training=training)


def _check_teachers_agree(st: SelfTrainer, done: int, device: torch.device) -> None:
    """Every rank's teacher follows its own student, which DDP keeps equal to the others': a sum of
    the teacher's weights must then be the same on every rank (a collective; cheap, per checkpoint)."""
    import torch.distributed as tdist

    total = sum(p.detach().double().sum() for p in st.teacher.model.parameters()).to(device)
    spread = torch.stack([total, -total])
    tdist.all_reduce(spread, op=tdist.ReduceOp.MAX)
    if float(spread[0] + spread[1]) != 0.0:  # max - min over the ranks
        raise TrainingError(f"the ranks' teachers differ at iteration {done}; their students must too: "
                            "check that every rank runs the same mslseg and config")


def _last_good(last: Path) -> str:
    where = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
    return f"{where}: lower optim.lr or check the data"


def _normalization(cfg: RunConfig) -> Normalization:
    return Normalization.named(cfg.model.normalization)


def prepare_net(model: SegModel, cfg: RunConfig, device: torch.device, dist: Dist) -> torch.nn.Module:
    """The module the steps call: `model`, compiled with `train.compile`, in DDP when distributed.

    Under DDP, `train.sync_bn` converts BatchNorm to SyncBatchNorm first, and the model is compiled
    before it is wrapped (the PyTorch docs' advice: torch.compile handles the inner module better
    than the DDP wrapper). `model` itself stays eager for evaluation and checkpoints; its
    parameters are the ones trained.
    """
    if dist.world > 1 and cfg.train.sync_bn:
        if device.type != "cuda":
            raise ConfigError("train.sync_bn needs CUDA ranks (DDP runs SyncBatchNorm on GPUs only); "
                              "drop it on the CPU")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the top module
    net: torch.nn.Module = torch.compile(model) if cfg.train.compile else model
    if dist.world == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # the aux head sits idle when method.multi_level is off
    unused = model.has_aux and not cfg.method.multi_level
    return DistributedDataParallel(net, device_ids=ids, find_unused_parameters=unused)

"""`run(cfg)`: source training and MSL adaptation, one loop for every method, resumable."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from mslseg import __version__
from mslseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mslseg.classes import palette_for
from mslseg.data import build_dataset
from mslseg.foreign import import_foreign
from mslseg.models.deeplabv2 import DeepLabV2, ModelSpec
from mslseg.runtime.atomic import atomic_write_text
from mslseg.runtime.errors import ConfigError, TrainingError
from mslseg.runtime.metadata import ModelMeta, Normalization
from mslseg.training.config import ModelConfig, RunConfig, load_config, to_dict
from mslseg.training.evaluate import evaluate
from mslseg.training.runtime_env import amp_dtype, capture_rng, resolve_device, restore_rng
from mslseg.training.sampling import stream_loader
from mslseg.training.step import StepStats, adapt_step, build_optimizer, set_poly_lr

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """This process's place in a distributed run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class RunResult:
    run_dir: Path
    iterations: int
    final_miou: float | None = None
    best_miou: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def build_model(cfg: ModelConfig, class_names: tuple[str, ...],
                train_size: tuple[int, int] | None) -> tuple[DeepLabV2, ModelMeta]:
    """The model to train: from `cfg.init` (own or foreign checkpoint) or freshly initialised."""
    n = len(class_names)
    if cfg.init is None:
        model = DeepLabV2(ModelSpec(cfg.backbone, n, cfg.multi_level, cfg.branches))
        meta = ModelMeta(num_classes=n, class_names=class_names, palette=palette_for(class_names),
                         normalization=Normalization.named(cfg.normalization))
    elif cfg.init_format:
        model, meta = import_foreign(cfg.init, cfg.init_format, num_classes=n, multi_level=cfg.multi_level)
    else:
        model, meta = model_from_checkpoint(load_checkpoint(cfg.init), cfg.init)
    if model.spec.num_classes != n:
        raise ConfigError(
            f"the model predicts {model.spec.num_classes} classes but the data has {n}; "
            "use a checkpoint or class set that match"
        )
    model.set_bn_mode(cfg.bn)
    meta = meta.with_(class_names=class_names, palette=palette_for(class_names),
                      arch=f"deeplabv2-{model.spec.backbone}", train_size=train_size,
                      mslseg_version=__version__)
    return model, meta


def _train_size(cfg: RunConfig) -> tuple[int, int] | None:
    wh = cfg.source.crop or cfg.source.size
    return (wh[1], wh[0]) if wh else None


def run(cfg: RunConfig, *, resume: bool = False, dist: Dist | None = None,
        on_step: Callable[[StepStats], None] | None = None) -> RunResult:
    """Train/adapt as `cfg` says, writing the run directory; returns where and how it ended.

    With `resume`, continues from `cfg.out/last.pt` (model, optimiser, RNG, sample position).
    """
    dist = dist or Dist()
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and device.index is None and dist.world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    out = Path(cfg.out)
    last = out / "last.pt"
    if resume and not last.is_file():
        raise ConfigError(f"cannot resume: {last} does not exist; start a new run instead")
    if not resume and last.exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    torch.manual_seed(cfg.train.seed)
    if resume:
        cfg = _rebatch_for_world(cfg, last, dist.world)

    source = build_dataset(cfg.source, _normalization(cfg), train=True, seed=cfg.train.seed)
    class_names = tuple(source.class_names)
    model, meta = build_model(cfg.model, class_names, _train_size(cfg))
    if model.spec.multi_level is False and cfg.method.multi_level:
        raise ConfigError("multi-level adaptation needs a model with an auxiliary head")
    # normalisation comes from the initial model: rebuild the datasets if it differs
    if meta.normalization != _normalization(cfg):
        source = build_dataset(cfg.source, meta.normalization, train=True, seed=cfg.train.seed)
    target = (build_dataset(cfg.target, meta.normalization, train=True, seed=cfg.train.seed + 1)
              if cfg.target is not None else None)
    target_val = (build_dataset(cfg.target_val, meta.normalization, train=False)
                  if cfg.target_val is not None else None)
    if target_val is not None and tuple(target_val.class_names) != class_names:
        raise ConfigError(f"target_val has classes {target_val.class_names}, the source {class_names}")

    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
    channels_last = cfg.train.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    dtype = amp_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    start, best = 0, None
    if resume:
        start, best = _restore(last, model, optimizer, scaler)
    net = model
    if dist.world > 1:
        net = _wrap_ddp(model, cfg, device)
    elif cfg.train.compile:
        net = torch.compile(model)

    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        _truncate_metrics(out / "metrics.jsonl", start)
    board = _tensorboard(out) if dist.main else None
    pin = device.type == "cuda"
    src_iter = stream_loader(source, cfg.train.batch_source, seed=cfg.train.seed,
                             start=start * cfg.train.batch_source * dist.world, workers=cfg.train.workers,
                             rank=dist.rank, world=dist.world, pin_memory=pin)
    tgt_iter = (stream_loader(target, cfg.train.batch_target, seed=cfg.train.seed + 1,
                              start=start * cfg.train.batch_target * dist.world, workers=cfg.train.workers,
                              rank=dist.rank, world=dist.world, pin_memory=pin)
                if target is not None else None)

    result = RunResult(out, start, best_miou=best)
    total = cfg.train.iterations
    net.train()
    t0, seen = time.perf_counter(), 0
    end = total if cfg.train.stop_after is None else min(total, start + cfg.train.stop_after)
    for it in range(start, end):
        lr = set_poly_lr(optimizer, cfg.optim, it, total)
        stats = adapt_step(net, optimizer, next(src_iter), next(tgt_iter) if tgt_iter else None,
                           cfg.method, iteration=it + 1, lr=lr, device=device, amp_dtype=dtype,
                           scaler=scaler, channels_last=channels_last)
        if not stats.finite:
            raise TrainingError(
                f"the loss became non-finite at iteration {it + 1} ({stats.to_dict()}); the last good "
                f"checkpoint is {last if last.exists() else 'not written yet'}: lower optim.lr or check the data"
            )
        seen += 1
        if on_step is not None:
            on_step(stats)
        done = it + 1
        if dist.main and (done % cfg.train.log_every == 0 or done == total):
            elapsed = time.perf_counter() - t0
            record = stats.to_dict() | {"images_per_s": seen * (cfg.train.batch_source + (
                cfg.train.batch_target if target else 0)) * dist.world / max(elapsed, 1e-9)}
            _append_metrics(out / "metrics.jsonl", record)
            result.history.append(record)
            if board is not None:
                for key, value in record.items():
                    if key != "iteration":
                        board.add_scalar(f"train/{key}", value, done)
            t0, seen = time.perf_counter(), 0
        evaluate_now = target_val is not None and (
            (cfg.train.eval_every and done % cfg.train.eval_every == 0) or done == total)
        if evaluate_now and dist.main:
            scores, _ = evaluate(model, target_val, device=device, num_classes=meta.num_classes,
                                 class_names=class_names, amp_dtype=dtype)
            _append_metrics(out / "metrics.jsonl", {"iteration": done, "eval": scores.to_dict()})
            result.final_miou = scores.miou
            if board is not None:
                board.add_scalar("eval/miou", scores.miou, done)
            if best is None or scores.miou > best:
                best = result.best_miou = scores.miou
                save_checkpoint(out / "best.pt", model, meta)
            net.train()
        if dist.main and (done % cfg.train.checkpoint_every == 0 or done in (total, end)):
            if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
                raise TrainingError(
                    f"the weights became non-finite by iteration {done}; the last good checkpoint is "
                    f"{last if last.exists() else 'not written yet'}: lower optim.lr or check the data"
                )
            training = {"iteration": done, "optimizer": optimizer.state_dict(), "rng": capture_rng(),
                        "scaler": scaler.state_dict() if scaler else None, "best_miou": best,
                        "world": dist.world,
                        "config": to_dict(cfg)}
            save_checkpoint(last, model, meta, training=training)
    result.iterations = end
    if board is not None:
        board.close()
    if end < total:
        return result
    if dist.main and target_val is None:
        save_checkpoint(out / "best.pt", model, meta)
    if dist.main:
        _plot(out)
    return result


def _tensorboard(out: Path):
    """A TensorBoard writer into the run dir when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _normalization(cfg: RunConfig) -> Normalization:
    return Normalization.named(cfg.model.normalization)


def _rebatch_for_world(cfg: RunConfig, last: Path, world: int) -> RunConfig:
    """Resuming on another number of ranks keeps the total batch: per-rank batch = total / world."""
    saved = (load_checkpoint(last).get("training") or {}).get("world", 1)
    if saved == world:
        return cfg
    train = cfg.train
    totals = (train.batch_source * saved, train.batch_target * saved)
    if any(t % world for t in totals):
        raise ConfigError(
            f"cannot resume a {saved}-rank run on {world} ranks: total batches {totals} do not divide by {world}"
        )
    log.info("resuming a %d-rank run on %d ranks with the same total batch", saved, world)
    return replace(cfg, train=replace(train, batch_source=totals[0] // world, batch_target=totals[1] // world))


def _restore(path: Path, model: DeepLabV2, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler | None) -> tuple[int, float | None]:
    data = load_checkpoint(path)
    training = data.get("training") or {}
    if "optimizer" not in training:
        raise ConfigError(f"{path} holds no training state; it cannot be resumed")
    model.load_state_dict(data["state_dict"])
    optimizer.load_state_dict(training["optimizer"])
    if scaler is not None and training.get("scaler"):
        scaler.load_state_dict(training["scaler"])
    restore_rng(training["rng"])
    log.info("resumed %s at iteration %d", path, training["iteration"])
    return int(training["iteration"]), training.get("best_miou")


def _wrap_ddp(model: DeepLabV2, cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if cfg.train.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # the aux head sits idle when method.multi_level is off
    unused = model.head_aux is not None and not cfg.method.multi_level
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def resume_config(run_dir: str | Path, overrides: list[str] = ()) -> RunConfig:
    """The config a run directory was started with, plus `overrides` (`key=value` strings)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); check --resume")
    return load_config(path, list(overrides))


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, iteration: int) -> None:
    """On resume, drop records logged after the checkpoint being resumed."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("iteration", 0) <= iteration]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _plot(out: Path) -> None:
    try:
        from mslseg.training.plots import plot_curves
    except ImportError:  # matplotlib is in the [train] extra; a run without it still completes
        log.warning("matplotlib is not installed; no curves.png (pip install 'mslseg[train]')")
        return
    plot_curves(out / "metrics.jsonl", out / "curves.png")

"""Online adaptation on the stream being segmented (issue 24 groundwork: the adapter, not yet wired
into `mslseg infer` or the Segmenter).

TENT's recipe with max-squares as the objective: the normalisation layers use each batch's own
statistics, and only their affine parameters learn (`params="norm"`; "all" lets every weight
learn), one SGD step on the objective of the frames just segmented, every `every`-th batch. The
prediction returned is the one made before the update (one forward for both). Options against
drift, after CoTTA: a mean teacher (`teacher_alpha`) that makes the predictions, and a stochastic
restore (`restore`: each adapted weight returns to its source value with that probability per
update).

The guard (`check_every` > 0): every `check_every`-th batch, a frozen copy of the starting model
labels the same frames; over the last `window` checks, classes that hold >= 1% of the source
copy's pixels but fall below a tenth of that in the adapted model's predictions, more of them than
new classes appear, have collapsed (label_free.lost, the rule runs without labels use). Then the adapted weights go back to the
last state that passed a check (the source state before the first) and the event is recorded.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mslseg.losses import entropy_loss, iw_max_square_loss, max_square_loss
from mslseg.models.base import split_output
from mslseg.training.label_free import lost

OBJECTIVES: dict[str, Callable[[Tensor], Tensor] | None] = {
    "msl": max_square_loss, "iw-msl": iw_max_square_loss, "entropy": entropy_loss, "none": None}
NORMS = (_BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass
class OnlineConfig:
    objective: str = "msl"  # msl | iw-msl | entropy (TENT's) | none (batch statistics only, no update)
    params: str = "norm"  # norm: the normalisation layers' affine parameters; all: every weight
    lr: float = 1e-3  # SGD, momentum 0.9
    every: int = 1  # update on every k-th batch (the others are only segmented)
    teacher_alpha: float | None = None  # a mean teacher makes the predictions (CoTTA: 0.999)
    restore: float = 0.0  # stochastic restore probability per weight and update (CoTTA: 0.01)
    check_every: int = 10  # guard: a check every k-th batch (0: no guard)
    window: int = 10  # guard: checks pooled into one comparison

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"online objective '{self.objective}' is not one of {', '.join(OBJECTIVES)}")
        if self.params not in ("norm", "all"):
            raise ValueError(f"online params '{self.params}' is not norm or all")
        if self.every < 1 or self.check_every < 0 or self.window < 1:
            raise ValueError("every and window must be >= 1, check_every >= 0")


@dataclass
class Reset:
    batch: int  # the batch whose check failed
    vanished: tuple[int, ...]  # the classes that vanished
    to: int  # the batch whose state was restored (0: the source state)


@dataclass
class OnlineStats:
    batches: int = 0
    updates: int = 0
    checks: int = 0
    resets: list[Reset] = field(default_factory=list)


def adapted_parameters(model: nn.Module, params: str) -> list[nn.Parameter]:
    """The parameters online adaptation changes; the rest stop requiring gradients."""
    if params == "all":
        chosen = [p for p in model.parameters()]
    else:
        chosen = [p for m in model.modules() if isinstance(m, NORMS) for p in (m.weight, m.bias) if p is not None]
    ids = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    if not chosen:
        raise ValueError("the model has no normalisation layer with affine parameters to adapt; use params='all'")
    return chosen


def use_batch_statistics(model: nn.Module) -> None:
    """BatchNorm normalises with each batch's own statistics and keeps no running ones (TENT)."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.train()
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None


class OnlineAdapter:
    """`adapter(images)` -> the logits (N, C, H, W) it predicts for them; adapts as it goes."""

    def __init__(self, model: nn.Module, cfg: OnlineConfig | None = None, *, seed: int = 0) -> None:
        self.cfg = cfg = cfg or OnlineConfig()
        model.eval()  # dropout off; BatchNorm below on batch statistics
        use_batch_statistics(model)
        # the guard's reference: the starting weights on the same batch statistics, never updated, so
        # that a check sees what the updates changed, not what the statistics did
        self.source = copy.deepcopy(model)
        for p in self.source.parameters():
            p.requires_grad_(False)
        self.model = model
        self.params = adapted_parameters(model, cfg.params)
        self._source_values = [p.detach().clone() for p in self.params]
        self._healthy = (0, [p.detach().clone() for p in self.params])
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=0.9)
        self.teacher = None
        if cfg.teacher_alpha is not None:
            self.teacher = copy.deepcopy(model)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.objective = OBJECTIVES[cfg.objective]
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = OnlineStats()
        self._shares: deque[tuple[Tensor, Tensor]] = deque(maxlen=cfg.window)  # (adapted, source) pixel counts

    def __call__(self, images: Tensor) -> Tensor:
        cfg, self.stats.batches = self.cfg, self.stats.batches + 1
        update = self.objective is not None and self.stats.batches % cfg.every == 0
        with torch.enable_grad() if update else torch.no_grad():
            logits = split_output(self.model(images), "the adapted model")[0]
            if update:
                loss = self.objective(logits)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.stats.updates += 1
                self._after_update()
        logits = logits.detach()
        if self.teacher is not None:
            with torch.no_grad():
                logits = split_output(self.teacher(images), "the teacher")[0]
        if cfg.check_every and self.stats.batches % cfg.check_every == 0:
            self._check(images, logits)
        return logits

    @torch.no_grad()
    def _after_update(self) -> None:
        cfg = self.cfg
        if self.teacher is not None:
            alpha = cfg.teacher_alpha
            for t, s in zip(self.teacher.parameters(), self.model.parameters(), strict=True):
                t.mul_(alpha).add_(s, alpha=1 - alpha)
        if cfg.restore > 0:
            for p, p0 in zip(self.params, self._source_values, strict=True):
                keep = torch.rand(p.shape, generator=self.generator) >= cfg.restore
                p.copy_(torch.where(keep.to(p.device), p, p0))

    @torch.no_grad()
    def _check(self, images: Tensor, logits: Tensor) -> None:
        """The guard: the adapted predictions' class shares against the source copy's, pooled over
        the last `window` checks; a vanished class restores the last healthy state."""
        self.stats.checks += 1
        c = logits.shape[1]
        ref = split_output(self.source(images), "the source model")[0]
        counts = (torch.bincount(logits.argmax(1).flatten().cpu(), minlength=c).double(),
                  torch.bincount(ref.argmax(1).flatten().cpu(), minlength=c).double())
        self._shares.append(counts)
        adapted = sum(a for a, _ in self._shares)
        source = sum(s for _, s in self._shares)
        vanished = lost((adapted / adapted.sum()).tolist(), (source / source.sum()).tolist())
        if not vanished:
            self._healthy = (self.stats.batches, [p.detach().clone() for p in self.params])
            return
        to, values = self._healthy
        for p, v in zip(self.params, values, strict=True):
            p.copy_(v)
        if self.teacher is not None:
            self.teacher.load_state_dict(self.model.state_dict())
        self.optimizer.state.clear()  # the momentum that drove it there goes too
        self._shares.clear()
        self.stats.resets.append(Reset(self.stats.batches, vanished, to))

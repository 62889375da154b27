"""Online adaptation on the stream being segmented: `mslseg infer --adapt`, `Segmenter(adapt=...)`
(a .pt on torch; mslseg.runtime.backends.torch_backend runs it), benchmarks/online.py.

TENT's recipe with max-squares as the objective: the normalisation layers use each batch's own
statistics (their running statistics follow the stream too, so that a snapshot is an ordinary
checkpoint that exports with the target's statistics), and only their affine parameters learn (`params="norm"`; "all" lets every weight
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
Three resets in a row (no healthy check between them) mean the settings themselves collapse the
model: the updates stop for good, the stream is segmented by the last healthy state, and it is said.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mslseg.losses import entropy_loss, iw_max_square_loss, max_square_loss
from mslseg.models.base import split_output
from mslseg.online_objectives import DEFAULT_EVERY, DEFAULT_GUARD, DEFAULT_LR, ONLINE_OBJECTIVES, ONLINE_PARAMS
from mslseg.training.label_free import lost

log = logging.getLogger(__name__)

OBJECTIVES: dict[str, Callable[[Tensor], Tensor] | None] = {
    "msl": max_square_loss, "iw-msl": iw_max_square_loss, "entropy": entropy_loss, "none": None}
assert OBJECTIVES.keys() == ONLINE_OBJECTIVES.keys(), "mslseg.online_objectives lists the objectives"
NORMS = (_BatchNorm, nn.LayerNorm, nn.GroupNorm)
RESETS_TO_STOP = 3  # guard resets in a row (no healthy check between) after which the updates stop


@dataclass
class OnlineConfig:
    objective: str = "msl"  # msl | iw-msl | entropy (TENT's) | none (batch statistics only, no update)
    params: str = "norm"  # norm: the normalisation layers' affine parameters; all: every weight
    lr: float = DEFAULT_LR  # SGD, momentum 0.9
    every: int = DEFAULT_EVERY  # update on every k-th batch (the others are only segmented)
    teacher_alpha: float | None = None  # a mean teacher makes the predictions (CoTTA: 0.999)
    restore: float = 0.0  # stochastic restore probability per weight and update (CoTTA: 0.01)
    check_every: int = DEFAULT_GUARD  # guard: a check every k-th batch (0: no guard)
    window: int = 10  # guard: checks pooled into one comparison

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"online objective '{self.objective}' is not one of {', '.join(OBJECTIVES)}")
        if self.params not in ONLINE_PARAMS:
            raise ValueError(f"online params '{self.params}' is not one of {', '.join(ONLINE_PARAMS)}")
        if self.every < 1 or self.check_every < 0 or self.window < 1:
            raise ValueError("every and window must be >= 1, check_every >= 0")


def online_config(adapt: Any) -> OnlineConfig:
    """An OnlineConfig from what `adapt=` takes: an objective name, a dict of fields, or one."""
    if isinstance(adapt, OnlineConfig):
        return adapt
    if isinstance(adapt, str):
        return OnlineConfig(objective=adapt)
    if isinstance(adapt, dict):
        unknown = set(adapt) - set(OnlineConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; valid: "
                             f"{', '.join(OnlineConfig.__dataclass_fields__)}")
        return OnlineConfig(**adapt)
    raise ValueError(f"give an objective ({', '.join(OBJECTIVES)}), a dict of settings or an OnlineConfig, "
                     f"not {type(adapt).__name__}")


@dataclass
class Reset:
    batch: int  # the batch whose check failed
    vanished: tuple[int, ...]  # the classes that vanished
    to: int  # the batch whose state was restored (0: the source state)
    frame: int = 0  # frames segmented up to and including that batch
    to_frame: int = 0  # frames segmented when the restored state was healthy


@dataclass
class OnlineStats:
    batches: int = 0
    updates: int = 0
    checks: int = 0
    frames: int = 0
    resets: list[Reset] = field(default_factory=list)
    # seconds spent in batches with an update and in those without (the guard's checks included),
    # and how many frames each had: the summary's ms/frame with and without the update
    stopped_at: int | None = None  # the frame the updates stopped at
    stopped_after: int = 0  # the resets in a row that stopped them (RESETS_TO_STOP)
    update_s: float = 0.0
    update_frames: int = 0
    plain_s: float = 0.0
    plain_frames: int = 0

    def ms_per_frame(self) -> tuple[float | None, float | None]:
        """(ms/frame in batches without an update, ms/frame in batches with one); None: no such batch."""
        return (1e3 * self.plain_s / self.plain_frames if self.plain_frames else None,
                1e3 * self.update_s / self.update_frames if self.update_frames else None)


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
    """BatchNorm normalises with each batch's own statistics (TENT); its running statistics follow
    the stream (momentum as the layer's), which is what a snapshot exports with."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.train()


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
        self._healthy_frame = 0
        self._in_row = 0  # resets since the last healthy check
        self.class_names: tuple[str, ...] = ()  # for the log line of a reset (the caller may set them)
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

    @property
    def deployed(self) -> nn.Module:
        """The network whose predictions are returned: the teacher where there is one."""
        return self.teacher if self.teacher is not None else self.model

    def __call__(self, images: Tensor) -> Tensor:
        t0 = time.perf_counter()
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
        # the guard watches the updates: none (objective none, or stopped), nothing to guard
        if cfg.check_every and self.objective is not None and self.stats.batches % cfg.check_every == 0:
            self._check(images, logits)
        n, seconds = images.shape[0], time.perf_counter() - t0
        self.stats.frames += n
        if update:
            self.stats.update_s, self.stats.update_frames = self.stats.update_s + seconds, self.stats.update_frames + n
        else:
            self.stats.plain_s, self.stats.plain_frames = self.stats.plain_s + seconds, self.stats.plain_frames + n
        return logits

    def state(self) -> dict:
        """What a continued run needs besides the starting model: the adapted weights (the teacher's
        too), the optimiser's momentum, the last healthy state, the counters and the random state."""
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "teacher": ({k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}
                            if self.teacher is not None else None),
                "optimizer": self.optimizer.state_dict(),
                "healthy": (self._healthy[0], [v.cpu().clone() for v in self._healthy[1]]),
                "healthy_frame": self._healthy_frame,
                "stats": {k: v for k, v in vars(self.stats).items() if k != "resets"}
                | {"resets": [vars(r) for r in self.stats.resets]},
                "generator": self.generator.get_state(), "config": vars(self.cfg)}

    def load_state(self, state: dict) -> None:
        """Continue from `state()` of an adapter built on the same starting model and settings."""
        if state.get("config", {}).get("objective") not in (None, self.cfg.objective) or \
                bool(state.get("teacher")) != (self.teacher is not None):
            raise ValueError(f"the saved adaptation used {state.get('config', {}).get('objective')}"
                             f"{' with a teacher' if state.get('teacher') else ''}, not {self.cfg.objective}"
                             f"{' with a teacher' if self.teacher is not None else ''}")
        self.model.load_state_dict(state["model"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        device = self.params[0].device
        batch, values = state["healthy"]
        self._healthy = (batch, [v.to(device) for v in values])
        self._healthy_frame = state.get("healthy_frame", 0)
        stats = dict(state["stats"])
        resets = [Reset(**(r | {"vanished": tuple(r["vanished"])})) for r in stats.pop("resets", [])]
        self.stats = OnlineStats(**stats, resets=resets)
        if self.stats.stopped_at is not None:
            self.objective = None
        self.generator.set_state(state["generator"])

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
        frame = self.stats.frames + images.shape[0]
        if not vanished:
            self._healthy = (self.stats.batches, [p.detach().clone() for p in self.params])
            self._healthy_frame = frame
            self._in_row = 0
            return
        to, values = self._healthy
        for p, v in zip(self.params, values, strict=True):
            p.copy_(v)
        if self.teacher is not None:
            self.teacher.load_state_dict(self.model.state_dict())
        self.optimizer.state.clear()  # the momentum that drove it there goes too
        self._shares.clear()
        reset = Reset(self.stats.batches, vanished, to, frame, self._healthy_frame)
        self.stats.resets.append(reset)
        log.warning("online adaptation: %d class(es) vanished against the starting model by frame %d (%s); "
                    "back to the state of frame %d", len(vanished), frame,
                    ", ".join(self.class_names[i] if i < len(self.class_names) else str(i) for i in vanished),
                    self._healthy_frame)
        self._in_row += 1
        if self._in_row >= RESETS_TO_STOP:  # the settings themselves collapse it: no more updates
            self.stats.stopped_at, self.stats.stopped_after = frame, self._in_row
            self.objective = None
            log.warning("online adaptation: %d resets in a row, so the updates stop (the stream is segmented by the "
                        "state of frame %d, on each batch's statistics); lower --adapt-lr or adapt only the norm "
                        "layers", self._in_row, self._healthy_frame)

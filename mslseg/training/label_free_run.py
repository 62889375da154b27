"""Label-free validation inside a run that has no target labels (no target_val).

A slice of the unlabelled target (the last `validation.holdout` frames, at most a tenth) is held
out of training. At the run's start the initial (source) model is measured on it: the reference,
if it knows the source (else the first evaluation whose model does: LabelFreeValidation).
At every evaluation the deployed network is measured on the same frames (mslseg.training.label_free);
`validation.score` picks best.pt, and the collapse guard compares the predicted class shares with
the reference's: classes holding >= 1% of the reference's pixels that fall below a tenth of that
(more of them than new classes appear), or a class distribution whose entropy falls below half the
reference's, is a collapse. A collapse
never becomes best.pt, is recorded in metrics.jsonl, and (validation.stop_on_collapse) stops the run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from mslseg.training.label_free import PRESENT, Signals, SourceFit, lost, measure, source_fit

BATCH = 8
SOURCE_FRAMES = 32  # labelled source frames that set the ATC threshold
ENTROPY_DROP = 0.5  # the class distribution's entropy below this share of the reference's: collapse


def split_holdout(target: Dataset, target_eval: Dataset, holdout: int) -> tuple[Dataset, Dataset | None]:
    """(training frames, held-out frames): the last min(holdout, len // 10) frames are held out.

    `target` is the training dataset (augmented), `target_eval` the same frames read as evaluation
    reads them (resized, never augmented): the held-out frames come from it."""
    n = len(target)
    k = min(holdout, n // 10)
    if k < 1:
        return target, None
    return Subset(target, range(n - k)), Subset(target_eval, range(n - k, n))


def distribution_entropy(shares: tuple[float, ...] | list[float]) -> float:
    return -sum(p * math.log(p) for p in shares if p > 0)


def describe_collapse(signals: Signals, reference: Signals, class_names: tuple[str, ...],
                      where: str = "the held-out target frames") -> str | None:
    """What collapsed against the reference's class shares, in words, or None: vanished classes that
    no new class replaced (label_free.lost), else an entropy drop below ENTROPY_DROP."""
    gone = lost(signals.class_share, reference.class_share)
    if gone:
        names = ", ".join(f"{class_names[k]} ({100 * reference.class_share[k]:.1f}% -> "
                          f"{100 * signals.class_share[k]:.2f}%)" for k in gone)
        return f"{names} vanished from the predictions on {where}"
    before, now = distribution_entropy(reference.class_share), distribution_entropy(signals.class_share)
    if before > 0 and now < ENTROPY_DROP * before:
        return (f"the predicted classes narrowed: their distribution's entropy fell from {before:.2f} to "
                f"{now:.2f} nats on {where}")
    return None


class LabelFreeValidation:
    """The held-out frames, the reference measured on them, and what each evaluation finds.

    The reference is the first model measured (the starting model, else an evaluation's) that knows
    the source (label_free.SourceFit.knows_source): a fresh head's class shares are noise, and a
    from-scratch run's first steps swing between classes, so nothing is judged against them."""

    def __init__(self, heldout: Dataset, source: Dataset, num_classes: int, class_names: tuple[str, ...],
                 device: torch.device):
        """`heldout`: the held-out target frames; `source`: labelled source frames as evaluation reads
        them (for the ATC threshold and the source fit)."""
        self.heldout, self.source = heldout, source
        self.num_classes, self.class_names, self.device = num_classes, class_names, device
        self.reference: Signals | None = None
        self.reference_iteration: int | None = None  # 0: the starting model
        self.fit: SourceFit | None = None  # the last measured model's

    def _images(self):
        for k in range(0, len(self.heldout), BATCH):
            yield torch.stack([self.heldout[i]["image"] for i in range(k, min(k + BATCH, len(self.heldout)))])

    def _labelled(self):
        n = min(SOURCE_FRAMES, len(self.source))
        for k in range(0, n, BATCH):
            items = [self.source[i] for i in range(k, min(k + BATCH, n))]
            yield torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])

    def measure(self, model: nn.Module, other: nn.Module | None = None) -> Signals:
        ref = self.reference.class_share if self.reference is not None else None
        with torch.random.fork_rng(devices=[]):  # the training's random stream is not touched
            self.fit = source_fit(model, self._labelled(), device=self.device)
            signals = measure(model, self._images(), self.num_classes, device=self.device, reference=ref,
                              other=other, atc_threshold=self.fit.threshold)
        signals.source_accuracy = self.fit.accuracy
        return signals

    def start(self, model: nn.Module) -> None:
        """Measure the model the run starts from; it is the reference if it knows the source."""
        self.take_reference(self.measure(model), 0)

    def take_reference(self, signals: Signals, iteration: int) -> bool:
        """`signals` (of the model just measured) become the reference if there is none yet and the
        model knows the source; their class confidence is then measured against themselves."""
        if self.reference is not None or self.fit is None or not self.fit.knows_source:
            return False
        self.reference, self.reference_iteration = signals, iteration
        present = [k for k, p in enumerate(signals.class_share) if p >= PRESENT]
        signals.class_confidence = signals.class_confidence if signals.class_confidence is not None else (
            sum(signals.confidence_by_class[k] for k in present) / len(present) if present else None)
        return True

    def reference_from(self) -> str:
        if self.reference_iteration == 0:
            return "the starting model"
        if self.reference_iteration is not None:
            return f"iteration {self.reference_iteration}"
        return ("the first evaluation whose model knows the source (the starting model does not: "
                f"{self.fit_words()})" if self.fit is not None else "the first evaluation whose model knows the source")

    def fit_words(self) -> str:
        f = self.fit
        return (f"source pixel accuracy {100 * f.accuracy:.0f}%, needs {100 * (1 + f.majority) / 2:.0f}%, "
                f"halfway from the majority class's {100 * f.majority:.0f}% to 100%")

    def unpicked(self) -> str:
        """Why no evaluation picked best.pt, in words."""
        if self.reference is None and self.fit is not None:
            return f"no evaluated model knew the source yet: {self.fit_words()}; train longer or start from a source model"
        return "no evaluation could be scored"

    def collapse(self, signals: Signals) -> str | None:
        """What collapsed, in words, or None."""
        if self.reference is None or signals is self.reference:
            return None
        return describe_collapse(signals, self.reference, self.class_names)

    def state(self) -> dict[str, Any]:
        if self.reference is None:
            return {}
        return {"reference": self.reference.to_dict(), "reference_iteration": self.reference_iteration}

    def load(self, state: dict[str, Any]) -> None:
        ref = state.get("reference")
        if ref:
            ref = dict(ref) | {"class_share": tuple(ref["class_share"]), "vanished": tuple(ref.get("vanished", ())),
                               "confidence_by_class": tuple(ref.get("confidence_by_class", ()))}
            self.reference = Signals(**ref)
            self.reference_iteration = state.get("reference_iteration", 0)

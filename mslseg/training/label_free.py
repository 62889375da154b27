"""Label-free signals of a segmentation model on unlabelled target frames: what a team without target
labels can still measure about an adapted model (the candidates of the label-free score).

Per model, over a set of frames (one pass, accumulated pixel-wise):

- `confidence`: the mean max softmax probability;
- `entropy`: the mean per-pixel entropy over log C (0: certain, 1: uniform);
- `class_share`: the share of pixels predicted as each class;
- `im`: information maximisation, H(mean prediction) - mean H(prediction), both over log C (high:
  confident pixels and diverse classes; Musgrave et al.'s best-behaved validator family);
- `flip_agreement`: the share of pixels whose label survives a horizontal flip (a model that learnt
  the scene answers the same; a collapsed one agrees trivially, so this is read beside the shares);
- `scale_agreement`: the same at 0.75 x the size;
- `class_confidence`: the mean over the reference's classes of the mean confidence of the pixels
  predicted as that class, a vanished class counting 0 (collapse pulls it down, unlike `confidence`);
- `agreement`: the share of pixels labelled as another model labels them (teacher vs student,
  adapted vs source);
- `atc`: ATC (Garg et al., ICLR 2022): the share of target pixels whose confidence exceeds the
  threshold at which the same share of *labelled source* pixels equals the source pixel accuracy,
  an estimate of the target pixel accuracy.

`collapse` compares class shares with a reference (the source model's on the same frames): a class
holding >= 1% of the reference's pixels that falls below a tenth of that share has vanished.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mslseg.models.base import split_output

PRESENT = 0.01  # a class the reference predicts on >= 1% of the pixels ...
VANISHED = 0.1  # ... has vanished below a tenth of that share
SCALE = 0.75


@dataclass
class Signals:
    frames: int
    confidence: float | None  # None: a model that outputs labels only
    entropy: float | None  # None: measured without the probabilities (an exported model)
    im: float | None
    flip_agreement: float
    scale_agreement: float | None  # None: an exported model runs at one size
    class_share: tuple[float, ...]
    class_confidence: float | None = None  # needs the reference's shares
    agreement: float | None = None  # with the `other` model
    atc: float | None = None  # needs a threshold from labelled source data
    vanished: tuple[int, ...] = field(default_factory=tuple)  # classes collapsed against the reference
    source_accuracy: float | None = None  # pixel accuracy on the labelled source frames ATC used
    confidence_by_class: tuple[float, ...] = ()  # mean confidence of the pixels predicted as each class (0: none)

    def to_dict(self) -> dict:
        return asdict(self)

    def score(self, name: str) -> float | None:
        """A label-free score (mslseg.label_free_scores), higher is better; None where not measured."""
        if name == "neg_entropy":
            return -self.entropy if self.entropy is not None else None
        value = getattr(self, name)
        return float(value) if value is not None else None


def _logits(model: nn.Module, image: Tensor) -> Tensor:
    out = split_output(model(image), "the model")[0].float()
    if out.shape[-2:] != image.shape[-2:]:
        out = F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return out


@torch.no_grad()
def measure(model: nn.Module, batches: Iterable[Tensor], num_classes: int, *, device: torch.device,
            reference: Sequence[float] | None = None, other: nn.Module | None = None,
            atc_threshold: float | None = None, per_frame: list | None = None) -> Signals:
    """The signals of `model` (eval mode) on `batches` of normalised images (N, 3, H, W).

    `reference`: class shares of the source model on the same frames (for `class_confidence` and
    `vanished`); `other`: a model to measure `agreement` with; `atc_threshold`: from `atc_threshold`.
    `per_frame`: a list that gets, per batch, its labels (N, H, W) uint8 numpy and each frame's
    share of pixels above `atc_threshold` (None without one), for pictures and intervals.
    """
    was = model.training
    model.eval()
    if other is not None:
        other_was = other.training
        other.eval()
    c = num_classes
    n_pix = 0
    frames = 0
    conf_sum = ent_sum = flip_same = scale_same = agree = above = 0.0
    prob_sum = torch.zeros(c, dtype=torch.float64)
    share = torch.zeros(c, dtype=torch.float64)
    conf_by_class = torch.zeros(c, dtype=torch.float64)
    try:
        for image in batches:
            image = image.to(device)
            logits = _logits(model, image)
            prob = logits.softmax(1)  # (N, C, H, W)
            top, label = prob.max(1)  # (N, H, W)
            ent = -(prob * prob.clamp_min(1e-12).log()).sum(1) / math.log(c)
            n_pix += label.numel()
            frames += image.shape[0]
            conf_sum += float(top.sum())
            ent_sum += float(ent.sum())
            prob_sum += prob.sum(dim=(0, 2, 3)).double().cpu()
            share += torch.bincount(label.flatten().cpu(), minlength=c).double()
            conf_by_class += torch.zeros(c, dtype=torch.float64).index_add_(
                0, label.flatten().cpu(), top.flatten().double().cpu())
            flipped = _logits(model, image.flip(-1)).argmax(1).flip(-1)
            flip_same += float((flipped == label).sum())
            h, w = image.shape[-2:]
            small = F.interpolate(image, size=(max(1, round(h * SCALE)), max(1, round(w * SCALE))),
                                  mode="bilinear", align_corners=False)
            scaled = F.interpolate(_logits(model, small), size=(h, w), mode="bilinear", align_corners=False)
            scale_same += float((scaled.argmax(1) == label).sum())
            if other is not None:
                agree += float((_logits(other, image).argmax(1) == label).sum())
            if atc_threshold is not None:
                above += float((top > atc_threshold).sum())
            if per_frame is not None:
                per_frame.append((label.to(torch.uint8).cpu().numpy(),
                                  (top > atc_threshold).float().mean(dim=(1, 2)).cpu().numpy()
                                  if atc_threshold is not None else None))
    finally:
        model.train(was)
        if other is not None:
            other.train(other_was)
    if n_pix == 0:
        raise ValueError("no frames to measure")
    shares = share / n_pix
    mean_prob = prob_sum / n_pix
    diversity = float(-(mean_prob * mean_prob.clamp_min(1e-12).log()).sum()) / math.log(c)
    signals = Signals(frames=frames, confidence=conf_sum / n_pix, entropy=ent_sum / n_pix,
                      im=diversity - ent_sum / n_pix, flip_agreement=flip_same / n_pix,
                      scale_agreement=scale_same / n_pix, class_share=tuple(float(v) for v in shares),
                      agreement=agree / n_pix if other is not None else None,
                      atc=above / n_pix if atc_threshold is not None else None)
    per_class = torch.where(share > 0, conf_by_class / share.clamp_min(1), torch.zeros_like(share))
    signals.confidence_by_class = tuple(float(v) for v in per_class)
    if reference is not None:
        ref = torch.tensor(list(reference), dtype=torch.float64)
        present = ref >= PRESENT
        signals.class_confidence = float(per_class[present].mean()) if present.any() else None
        signals.vanished = collapse(shares.tolist(), reference)
    return signals


def collapse(shares: Sequence[float], reference: Sequence[float], *, present: float = PRESENT,
             vanished: float = VANISHED) -> tuple[int, ...]:
    """The classes holding >= `present` of the reference's pixels whose share fell below
    `vanished` x the reference's."""
    return tuple(k for k, (s, r) in enumerate(zip(shares, reference, strict=True)) if r >= present and s < vanished * r)


NET_LOST = 2  # vanished classes beyond those that appeared that make a collapse


def lost(shares: Sequence[float], reference: Sequence[float]) -> tuple[int, ...]:
    """The vanished classes (`collapse`) where they outnumber the classes that appeared (under
    PRESENT in the reference, at or above it now) by NET_LOST or more, else (). Calibrated on the
    method tables and a first run from a weak source model (docs/label-free.md): IW-MSL on
    SegFormer drops the source model's spurious traffic lights and finds vegetation instead;
    DAFormer from a weak source model takes back the road it called car and loses terrain while
    finding sidewalk; MinEnt drops cars and traffic lights and finds nothing. One class lost net
    may be a wrong source class corrected: a labelled check tells, this one cannot."""
    gone = collapse(shares, reference)
    appeared = [k for k, (s, r) in enumerate(zip(shares, reference, strict=True)) if r < PRESENT <= s]
    return gone if len(gone) - len(appeared) >= NET_LOST else ()


@dataclass(frozen=True)
class SourceFit:
    """How a model does on labelled source frames: ATC's threshold, its pixel accuracy, and the share
    of the most frequent class (the accuracy of a model that predicts only it)."""

    threshold: float
    accuracy: float
    majority: float

    @property
    def knows_source(self) -> bool:
        """At least halfway from predicting the majority class everywhere to a perfect source
        accuracy: a model whose class shares mean something (a fresh head's do not)."""
        return self.accuracy >= (1 + self.majority) / 2


@torch.no_grad()
def source_fit(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, device: torch.device,
               ignore_index: int = 255) -> SourceFit:
    """`model` (eval mode) on labelled source batches (image, label): see SourceFit. ATC's threshold
    is the confidence t at which the share of pixels above t equals the model's pixel accuracy."""
    was = model.training
    model.eval()
    confs, correct, counts = [], 0, None
    try:
        for image, label in batches:
            image, label = image.to(device), label.to(device)
            prob = _logits(model, image).softmax(1)
            top, pred = prob.max(1)
            valid = label != ignore_index
            confs.append(top[valid].flatten().cpu())
            correct += int((pred[valid] == label[valid]).sum())
            seen = torch.bincount(label[valid].flatten().cpu(), minlength=prob.shape[1])
            counts = seen if counts is None else counts + seen
    finally:
        model.train(was)
    return fit_from(torch.cat(confs) if confs else torch.zeros(0), correct, counts)


def fit_from(conf: Tensor, correct: int, counts: Tensor | None) -> SourceFit:
    """SourceFit from the confidences of the valid source pixels, how many were right, and the
    pixels of each true class."""
    if conf.numel() == 0 or counts is None:
        raise ValueError("no labelled source pixel to set the ATC threshold on")
    accuracy = correct / conf.numel()
    # the share above t equals accuracy: t is the (1 - accuracy) quantile of the confidences
    threshold = float(torch.quantile(conf.double()[:2_000_000], 1 - accuracy)) if accuracy < 1 else 0.0
    return SourceFit(threshold, accuracy, float(counts.max()) / conf.numel())


def atc_threshold(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, device: torch.device,
                  ignore_index: int = 255) -> float:
    """ATC's threshold from labelled source batches (image, label) (see source_fit)."""
    return source_fit(model, batches, device=device, ignore_index=ignore_index).threshold

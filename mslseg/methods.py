"""The adaptation methods: one entry each, read by config validation, the CLI's help, the docs and
the training step.

Torch-free, so `mslseg --help` can list them: an entry names its target loss (a key of
`mslseg.losses.TARGET_LOSSES`, resolved there when a run starts: `losses.target_loss_fn`), the
`MethodConfig` fields the loss takes, mapped to its keyword names, and for the self-training family
what its mean teacher does (`SelfTraining`: mixing, rare class sampling, masked consistency,
warm-up). Adding a method is one entry here (and its loss in mslseg.losses); the loop differs by
nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class SelfTraining:
    """The mean-teacher part of a method (mslseg.training.self_training): an EMA teacher's
    pseudo-labels on target images, learnt by the student on ClassMix images (DACS)."""

    rare_class: bool = False  # source images drawn by class frequency (DAFormer's rare class sampling)
    mic: bool = False  # masked image consistency (MIC): the student also learns the masked target image
    warmup_share: float = 0.0  # linear lr warm-up over this share of the run (DAFormer: 1500 of 40000)


DAFORMER_WARMUP = 1500 / 40000  # DAFormer's warm-up, as a share of its schedule


@dataclass(frozen=True)
class Method:
    summary: str  # one line for the CLI help and the docs
    loss: str  # its target loss: a key of mslseg.losses.TARGET_LOSSES
    # MethodConfig field -> the loss's keyword it is passed as (iw-msl: iw_ratio -> ratio)
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    needs_target: bool = True  # a run without target data (train's source-only runs) cannot use it
    self_training: SelfTraining | None = None  # None: the loss alone (MSL's family)

    def loss_kwargs(self, cfg: Any) -> dict[str, Any]:
        """The keyword arguments its loss takes from `cfg` (a MethodConfig)."""
        return {keyword: getattr(cfg, name) for name, keyword in self.params.items()}


METHODS: dict[str, Method] = {
    "iw-msl": Method("image-wise class-balanced max-squares (the paper's full method; adapt's default)",
                     "iw-msl", MappingProxyType({"iw_ratio": "ratio"})),
    "msl": Method("max-squares", "msl"),
    "minent": Method("entropy minimisation (the MinEnt baseline)", "minent"),
    "none": Method("no target loss: BatchNorm statistics only (BN-only); train's source-only runs", "none",
                   needs_target=False),
    "dacs": Method("self-training: mean teacher, ClassMix, colour jitter and blur (DACS)", "none",
                   self_training=SelfTraining()),
    "daformer": Method("self-training + rare class sampling + lr warm-up (DAFormer's recipe)", "none",
                       self_training=SelfTraining(rare_class=True, warmup_share=DAFORMER_WARMUP)),
    "mic": Method("DAFormer's self-training + masked image consistency (MIC)", "none",
                  self_training=SelfTraining(rare_class=True, mic=True, warmup_share=DAFORMER_WARMUP)),
    "iw-msl+daformer": Method("IW-MSL as an extra target loss beside DAFormer's self-training", "iw-msl",
                              MappingProxyType({"iw_ratio": "ratio"}),
                              self_training=SelfTraining(rare_class=True, warmup_share=DAFORMER_WARMUP)),
}
ADAPT_DEFAULT = "iw-msl"  # what `mslseg adapt` runs where a config names no method


def methods_help() -> str:
    return " | ".join(METHODS)

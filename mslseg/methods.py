"""The adaptation methods: one entry each, read by config validation, the CLI's help, the docs and
the training step.

Torch-free, so `mslseg --help` can list them: an entry names its target loss (a key of
`mslseg.losses.TARGET_LOSSES`, resolved there when a run starts: `losses.target_loss_fn`) and the
`MethodConfig` fields the loss takes, mapped to its keyword names. Adding a method is one entry
here (and its loss in mslseg.losses); the loop differs by nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Method:
    summary: str  # one line for the CLI help and the docs
    loss: str  # its target loss: a key of mslseg.losses.TARGET_LOSSES
    # MethodConfig field -> the loss's keyword it is passed as (iw-msl: iw_ratio -> ratio)
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    needs_target: bool = True  # a run without target data (train's source-only runs) cannot use it

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
}
ADAPT_DEFAULT = "iw-msl"  # what `mslseg adapt` runs where a config names no method


def methods_help() -> str:
    return " | ".join(METHODS)

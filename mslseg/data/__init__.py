"""Datasets: the real layouts (GTA5, Cityscapes, SYNTHIA, NTHU), folders, video frames, synthetic data.

`build_dataset(cfg, normalization, train=..., seed=...)` is the entry point; it is imported lazily
so that `mslseg.data.config` stays light (no torch, no OpenCV).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mslseg.data.build import build_dataset

__all__ = ["build_dataset"]


def __getattr__(name: str) -> Any:
    if name == "build_dataset":
        from mslseg.data.build import build_dataset

        return build_dataset
    raise AttributeError(f"module 'mslseg.data' has no attribute '{name}'")

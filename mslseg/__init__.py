"""mslseg: unsupervised domain adaptation for semantic segmentation with the Maximum Squares Loss.

`import mslseg` is light: torch and the models load on first use of `load_model`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from mslseg.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'mslseg' has no attribute {name!r}")

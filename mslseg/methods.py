"""The adaptation methods: one entry each, read by config validation, the CLI's help and the docs.

Torch-free, so `mslseg --help` can list them. Each name has its target loss in
`mslseg.losses.TARGET_LOSSES` (a test holds the two to the same names); the loop differs by
nothing else.
"""

from __future__ import annotations

METHODS: dict[str, str] = {
    "iw-msl": "image-wise class-balanced max-squares (the paper's full method; adapt's default)",
    "msl": "max-squares",
    "minent": "entropy minimisation (the MinEnt baseline)",
    "none": "no target loss: BatchNorm statistics only (BN-only); train's source-only runs",
}


def methods_help() -> str:
    return " | ".join(METHODS)

"""Device, mixed precision and RNG state: what a run needs from its machine."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from mslseg.runtime.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda when available, else cpu; a CUDA device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device} was asked for but only {torch.cuda.device_count()} CUDA GPU(s) "
                          "are visible (cuda:0 ...)")
    return device


def rank_device(requested: str, *, world: int, local_rank: int, cuda_available: bool) -> tuple[str, str | None]:
    """The device name this rank trains on, and a warning when the request was overridden.

    Under torchrun (world > 1) on CUDA every rank takes the GPU of its LOCAL_RANK: `auto` and `cuda`
    resolve to `cuda:<local_rank>`, and an explicit `cuda:N` is overridden with a warning (it
    would put every rank on one GPU; choose GPUs with CUDA_VISIBLE_DEVICES instead). `cpu`, and
    any request in a single process, pass through unchanged.
    """
    if world <= 1 or requested == "cpu":
        return requested, None
    if requested == "auto":
        return (f"cuda:{local_rank}", None) if cuda_available else ("cpu", None)
    try:
        device = torch.device(requested)
    except RuntimeError:
        return requested, None  # resolve_device says what is wrong with it
    if device.type != "cuda":
        return requested, None
    own = f"cuda:{local_rank}"
    if device.index is None or device.index == local_rank:
        return own, None
    return own, (f"train.device={requested} is ignored under torchrun with {world} ranks: each rank uses the GPU "
                 f"of its LOCAL_RANK (this rank: {own}); choose GPUs with CUDA_VISIBLE_DEVICES")


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`; None: full precision."""
    native = device.type == "cuda" and bf16_native(device)
    if amp == "bf16" and device.type == "cuda" and not native:
        log.warning("train.amp=bf16 on %s (compute capability %d.%d): bf16 is emulated below 8.0 and cuDNN has "
                    "no bf16 convolutions there, so this runs slowly; train.amp=fp16 (or auto) is the fast path",
                    device, *torch.cuda.get_device_capability(device))
    return choose_amp(amp, device.type, bf16_native=native)


def choose_amp(amp: str, device_type: str, *, bf16_native: bool) -> torch.dtype | None:
    """The autocast dtype for `amp` on a device of `device_type`; None: full precision.

    auto: bf16 where the GPU computes it natively (`bf16_native`: compute capability >= 8.0, or
    ROCm), else fp16 (with a GradScaler, which the caller adds for fp16); off on the CPU.
    """
    if amp == "off" or (amp == "auto" and device_type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if bf16_native else torch.float16
    if amp == "fp16" and device_type != "cuda":
        raise ConfigError("fp16 autocast needs a CUDA device; use --amp bf16 or off on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def bf16_native(device: torch.device) -> bool:
    """Whether the GPU `device` computes bf16 natively (not emulated): compute capability >= 8.0, or ROCm.

    Not `torch.cuda.is_bf16_supported()`: by default it counts emulation (True on a T4 or V100,
    where cuDNN has no bf16 convolutions), and it asks about the current device, not `device`.
    """
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device) >= (8, 0)


def capture_rng() -> dict[str, Any]:
    """RNG states as tensors and plain types (a checkpoint stays weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_plain(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], *, own_cuda: int | None = None) -> None:
    """Sets the RNG states of `capture_rng`. CUDA: the saved states of the GPUs this machine has
    (a run resumed on fewer GPUs drops the rest, with a log line); with `own_cuda` (a distributed
    rank) only that GPU's state."""
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        keep, note = cuda_rng_states(list(state["cuda"]), torch.cuda.device_count(), own=own_cuda)
        for index, cuda_state in keep.items():
            torch.cuda.set_rng_state(cuda_state, index)
        if note:
            log.info("%s", note)


def cuda_rng_states(saved: Sequence[T], available: int, *, own: int | None = None) -> tuple[dict[int, T], str | None]:
    """Which saved per-GPU RNG states to restore: {device index: state}, and a note on what was not.

    `saved[i]` is GPU i's state when the checkpoint was written, `available` the GPUs visible now.
    `own` (a distributed rank's GPU): only that state. GPUs without a saved state keep their seeded one.
    """
    if own is not None:
        if own < len(saved):
            return {own: saved[own]}, None
        return {}, f"last.pt holds CUDA RNG states for {len(saved)} GPU(s), none for cuda:{own}; it keeps its seeded state"
    keep = {i: s for i, s in enumerate(saved) if i < available}
    if len(saved) <= available:
        return keep, None
    dropped = ", ".join(f"cuda:{i}" for i in range(available, len(saved)))
    return keep, (f"last.pt holds CUDA RNG states for {len(saved)} GPUs, this machine has {available}: "
                  f"the states of {dropped} are dropped")


def _to_plain(x: Any) -> Any:
    return [_to_plain(v) for v in x] if isinstance(x, tuple) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x

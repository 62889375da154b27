"""Bring your own network: `python:MODULE:FACTORY` builds any nn.Module a user writes.

`FACTORY(num_classes=N)` returns a module mapping (N, 3, H, W) normalised floats to logits at any
stride, in any of the output shapes `split_output` reads (a tensor, (main, aux), torchvision's
dict with 'out'/'aux', an object with .logits). MODULE is an importable module name
(`mypkg.nets`) or a .py file (`nets.py`, `path/to/nets.py`).

Safety: a checkpoint records the factory's name, and loading that checkpoint never imports it on
the checkpoint's say-so; the caller names the same factory (`--factory` at the CLI,
`load_model(..., factory=...)`), or loading stops with one line that says so.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mslseg.architectures import PREFIX, is_factory
from mslseg.models.base import SegModel, split_output, to_input_size
from mslseg.runtime.errors import ModelFormatError

__all__ = ["FactoryModel", "check_factory_allowed", "is_factory", "resolve_factory"]
# top-level module names that hold an encoder (learning at the base rate); everything else is a head
BODY_PREFIXES = ("backbone", "encoder", "segformer", "features", "stem", "body")
_PROBE = (64, 64)  # (H, W) of the probe forward that learns the output shape


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """The callable `python:MODULE:FACTORY` names, imported; ModelFormatError with what to fix."""
    parts = name.removeprefix(PREFIX).rsplit(":", 1)
    if not name.startswith(PREFIX) or len(parts) != 2 or not all(parts):
        raise ModelFormatError(f"'{name}' does not name a factory; write python:MODULE:FUNCTION "
                               "(python:mypkg.nets:build_net, or python:nets.py:build_net)")
    module_name, attr = parts
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ModelFormatError(f"{name}: {path} does not exist")
            spec = importlib.util.spec_from_file_location(f"mslseg_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelFormatError(f"{name}: cannot import {module_name} ({exc}); install it, run from the folder "
                               "that holds it, or give its .py file (python:path/to/nets.py:FUNCTION)") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelFormatError(f"{name}: {module_name} has no function {attr}")
    return fn


class FactoryModel(SegModel):
    """A user's network (as `net`) behind the protocol; outputs read by `split_output`, resized to the input."""

    def __init__(self, factory: str, num_classes: int, *, build: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        self.arch = factory
        self._num_classes = num_classes
        fn = build or resolve_factory(factory)
        try:
            net = fn(num_classes=num_classes)
        except TypeError as exc:
            raise ModelFormatError(f"{factory} must accept num_classes=N ({exc})") from None
        if not isinstance(net, nn.Module):
            raise ModelFormatError(f"{factory} returned {type(net).__name__}, not a torch nn.Module")
        self.net = net
        self._has_aux = self._probe()

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def has_aux(self) -> bool:
        return self._has_aux

    def spec_dict(self) -> dict[str, Any]:
        return {"factory": self.arch, "num_classes": self._num_classes}

    def is_head(self, name: str) -> bool:
        top = name.removeprefix("net.").split(".")[0]
        return top not in BODY_PREFIXES

    def forward(self, x: Tensor, with_aux: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
        main, aux = split_output(self.net(x), self.arch)
        main = to_input_size(main, x)
        if not with_aux:
            return main
        return main, to_input_size(aux, x) if aux is not None else None

    def _probe(self) -> bool:
        """Runs one small forward: the output must be logits of num_classes; returns whether it has aux."""
        was = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                main, aux = split_output(self.net(torch.zeros(1, 3, *_PROBE)), self.arch)
        except ModelFormatError:
            raise
        except Exception as exc:  # the user's code: any error is theirs to see, in one line
            raise ModelFormatError(f"{self.arch} failed on a (1, 3, {_PROBE[0]}, {_PROBE[1]}) input "
                                   f"({type(exc).__name__}: {str(exc)[:160]})") from None
        finally:
            self.net.train(was)
        if main.ndim != 4 or main.shape[1] != self._num_classes:
            raise ModelFormatError(f"{self.arch} gives logits of shape {tuple(main.shape)}; expected "
                                   f"(N, {self._num_classes}, h, w) for {self._num_classes} classes")
        return aux is not None


def check_factory_allowed(arch: str, factory: str | None, source: str) -> None:
    """A checkpoint built by a Python factory loads only when the caller names the same factory."""
    if factory == arch:
        return
    given = f" (you named {factory}, another)" if factory else ""
    raise ModelFormatError(
        f"{source} was built by {arch}, and mslseg does not import code a checkpoint names on its own say-so"
        f"{given}; if you trust that code, pass --factory {arch} (train/adapt: --model {arch}; Python: "
        f"factory='{arch}')"
    )

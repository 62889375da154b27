"""Bring your own network: `python:MODULE:FACTORY` builds any nn.Module a user writes.

`FACTORY(num_classes=N)` returns a module mapping (N, 3, H, W) normalised floats to logits at any
stride, in any of the output shapes `split_output` reads (a tensor, (main, aux), torchvision's
dict with 'out'/'aux', an object with .logits). MODULE is an importable module name
(`mypkg.nets`) or a .py file (`nets.py`, `path/to/nets.py`).

Safety: a checkpoint records the factory's name and what identifies its code (a .py file's
absolute path and file name, or a module's name: `FactoryRef.record`), and loading that checkpoint
never imports it on the checkpoint's say-so; the caller names the same factory (`--factory` at the
CLI, `load_model(..., factory=...)`), from any folder, and only the code the caller names is
imported (`check_factory_allowed`), or loading stops with one line that says what differs.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from mslseg.architectures import FACTORY_MESSAGE, PREFIX, ModelRef, is_factory
from mslseg.models.base import SegModel, split_output, to_input_size
from mslseg.runtime.errors import ModelFormatError

__all__ = ["FactoryModel", "FactoryRef", "check_factory_allowed", "is_factory", "resolve_factory"]
log = logging.getLogger(__name__)
# top-level module names that hold an encoder (learning at the base rate); everything else is a head
BODY_PREFIXES = ("backbone", "encoder", "segformer", "features", "stem", "body")
_PROBE = (64, 64)  # (H, W) of the probe forward that learns the output shape


@dataclass(frozen=True)
class FactoryRef:
    """What `python:MODULE:FUNCTION` names, parsed without importing anything."""

    name: str  # as written
    module: str  # a module name (mypkg.nets) or a .py path (nets.py, path/to/nets.py)
    function: str

    @classmethod
    def parse(cls, name: str) -> FactoryRef:
        """The factory `name` names (architectures.ModelRef parses it); ModelFormatError for any other name."""
        if not is_factory(name):
            raise ModelFormatError(f"'{name}' does not name a factory; {FACTORY_MESSAGE}")
        ref = ModelRef.parse(name)
        return cls(name, ref.module, ref.function)

    @property
    def is_file(self) -> bool:
        return self.module.endswith(".py")

    @property
    def file(self) -> Path:
        """The .py file, resolved against the working directory (is_file only)."""
        return Path(self.module).expanduser().resolve()

    def record(self) -> dict[str, str]:
        """What a checkpoint stores to recognise this code from any folder: the function, and the
        .py file's absolute path and name, or the module's name."""
        if self.is_file:
            return {"function": self.function, "file": str(self.file), "file_name": self.file.name}
        return {"function": self.function, "module": self.module}


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """The callable `python:MODULE:FACTORY` names, imported; ModelFormatError with what to fix."""
    ref = FactoryRef.parse(name)
    module_name, attr = ref.module, ref.function
    if ref.is_file:
        path = Path(module_name)
        if not path.is_file():
            raise ModelFormatError(f"{name}: {path} does not exist (looked in {Path.cwd()}); "
                                   "give the file's path from here, or its absolute path")
        spec = importlib.util.spec_from_file_location(f"mslseg_user_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            with user_code(name):
                spec.loader.exec_module(module)
        except ModelFormatError:
            sys.modules.pop(spec.name, None)  # a fixed file imports afresh in the same process
            raise
    else:
        try:
            with user_code(name, missing=module_name):
                module = importlib.import_module(module_name)
        except _NoSuchModule as exc:
            raise ModelFormatError(f"{name}: cannot import {module_name} ({exc}); install it, run from the "
                                   "folder that holds it, or give its .py file (python:path/to/nets.py:FUNCTION)") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelFormatError(f"{name}: {module_name} has no function {attr}")
    return fn


class _NoSuchModule(Exception):
    """The module a factory names (or a package above it) is not there at all."""


@contextmanager
def user_code(name: str, missing: str | None = None) -> Iterator[None]:
    """Runs the user's code (importing their module, calling their factory): whatever it raises is
    theirs to fix, said in one line with where it was raised, not as mslseg's traceback. `missing`:
    the module being imported, whose own absence is _NoSuchModule (a different fix)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if missing and exc.name and (missing == exc.name or missing.startswith(exc.name + ".")):
            raise _NoSuchModule(str(exc)) from None
        raise _user_error(name, exc) from None
    except Exception as exc:
        raise _user_error(name, exc) from None


def _user_error(name: str, exc: Exception) -> ModelFormatError:
    detail = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
    return ModelFormatError(f"{name} could not be loaded: {detail[:200]}{_raised_in(exc.__traceback__)}; "
                            "install what it imports or fix the module")


def _raised_in(tb: TracebackType | None) -> str:
    """' (raised in nets.py line 3)': the innermost frame of the user's own code (outside the standard
    library, installed packages and mslseg), else the innermost frame of all."""
    frames = [f for f, _ in traceback.walk_tb(tb) if not f.f_code.co_filename.startswith("<")]
    if not frames:
        return ""
    installed = {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    installed.add(str(Path(__file__).parents[1]))  # mslseg itself
    own = [f for f in frames if not any(f.f_code.co_filename.startswith(p) for p in installed if p)]
    frame = (own or frames)[-1]
    path = Path(frame.f_code.co_filename)
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    return f" (raised in {shown} line {frame.f_lineno})"


class FactoryModel(SegModel):
    """A user's network (as `net`) behind the protocol; outputs read by `split_output`, resized to the input."""

    def __init__(self, factory: str, num_classes: int, *, build: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        self.arch = factory
        self._num_classes = num_classes
        fn = build or resolve_factory(factory)
        try:
            inspect.signature(fn).bind(num_classes=num_classes)
        except TypeError as exc:
            raise ModelFormatError(f"{factory} must accept num_classes=N ({exc})") from None
        except ValueError:  # a builtin or C callable without a signature: calling it will tell
            pass
        with user_code(factory):
            net = fn(num_classes=num_classes)
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
        # `code` lets a load from another folder recognise the same code (check_factory_allowed)
        return {"factory": self.arch, "num_classes": self._num_classes, "code": FactoryRef.parse(self.arch).record()}

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


@dataclass(frozen=True)
class _Recorded:
    """What a checkpoint says about its factory's code (older checkpoints: only the name as typed)."""

    ref: FactoryRef
    file: Path | None  # the absolute .py path, where known (None: a module, or an old relative path)

    @classmethod
    def of(cls, arch: str, code: dict[str, Any] | None) -> _Recorded:
        ref = FactoryRef.parse(arch)
        file = (code or {}).get("file") or (ref.module if ref.is_file and Path(ref.module).is_absolute() else None)
        return cls(ref, Path(file) if file else None)

    def suggestion(self) -> str:
        """The --factory that names this code from the working directory, where that can be said."""
        ref = self.ref
        if not ref.is_file:
            return ref.name
        if self.file is not None and self.file.is_file():
            return f"{PREFIX}{self.file}:{ref.function}"
        if self.file is None and Path(ref.module).is_file():  # an old relative path that holds from here
            return ref.name
        return f"{PREFIX}PATH/TO/{Path(ref.module).name}:{ref.function}"


def _compare(rec: _Recorded, given: FactoryRef, source: str) -> tuple[str | None, str | None]:
    """(what differs, or None; a note to log when the code was recognised by its file name only)."""
    if rec.ref.function != given.function:
        return f"recorded function {rec.ref.function}, given {given.function}", None
    if not rec.ref.is_file:
        if given.is_file:
            return f"recorded module {rec.ref.module}, given the file {given.file}", None
        return (None, None) if given.module == rec.ref.module else (
            f"recorded module {rec.ref.module}, given module {given.module}", None)
    if not given.is_file:
        return f"recorded file {rec.file or rec.ref.module}, given module {given.module}", None
    here, name = given.file, Path(rec.ref.module).name
    if rec.file is not None:
        if here == rec.file.resolve():
            return None, None
        if rec.file.exists():
            return f"recorded file {rec.file}, given {here}", None
        if here.name != name:
            return f"recorded file {rec.file} (no longer there), given {here}", None
        return None, (f"{source}: its code {rec.file} no longer exists; using {here} "
                      f"(the same file name and function {given.function})")
    # a checkpoint from before `code` was recorded: a path relative to the folder it was trained in
    if here == Path(rec.ref.module).resolve():
        return None, None
    if here.name != name:
        return f"recorded file {rec.ref.module} (relative to the folder it was trained in), given {here}", None
    return None, (f"{source} records {rec.ref.module} relative to the folder it was trained in; using {here} "
                  f"(the same file name and function {given.function})")


def check_factory_allowed(arch: str, factory: str | None, source: str,
                          code: dict[str, Any] | None = None) -> None:
    """A checkpoint built by a Python factory loads only when the caller names the same code.

    `code` is what the checkpoint recorded (`FactoryRef.record`). The same code: the same module and
    function, or a .py file that resolves to the recorded one; where the recorded file is gone (or an
    older checkpoint recorded a relative path), a file of the same name with the same function, said
    in a log line. Nothing is imported here: only the caller's `factory` is, afterwards."""
    rec = _Recorded.of(arch, code)
    hint = rec.suggestion()
    advice = (f"if you trust that code, pass --factory {hint} (train/adapt: --model {hint}; "
              f"Python: factory='{hint}')")
    if not factory:
        raise ModelFormatError(f"{source} was built by {arch}, and mslseg does not import code a checkpoint "
                               f"names on its own say-so; {advice}")
    differs, note = _compare(rec, FactoryRef.parse(factory), source)
    if differs:
        raise ModelFormatError(f"{source} was built by {arch}; you named {factory}, another ({differs}); "
                               f"mslseg imports only the code you name, and it must be the checkpoint's: {advice}")
    if note:
        log.warning("%s", note)

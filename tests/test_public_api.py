"""Every name a module lists in `__all__` exists, and `from module import *` works.

Modules are found by walking mslseg, mslseg.runtime and mslseg.export (three folders, see
pyproject's package-dir); only those whose source defines `__all__` are imported, so the walk
never runs `mslseg.__main__`. A module whose names need an extra that is not installed (torch on
a runtime-only machine) is skipped, not failed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest

import mslseg
import mslseg.export
import mslseg.runtime

# the extras' packages: a module needing one that is absent is skipped
OPTIONAL = {"torch", "torchvision", "transformers", "onnx", "onnxslim", "onnxruntime", "tensorrt", "cuda",
            "matplotlib", "PIL", "av"}


def _modules_with_all() -> list[str]:
    found = []
    for package in (mslseg, mslseg.runtime, mslseg.export):
        # walk_packages imports subpackages to descend; one needing a missing extra is not descended
        walked = pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        names = [package.__name__, *(m.name for m in walked)]
        for name in names:
            origin = importlib.util.find_spec(name).origin
            if origin and re.search(r"^__all__\b", Path(origin).read_text(encoding="utf-8"), re.M):
                found.append(name)
    return sorted(set(found))


MODULES = _modules_with_all()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that blocks it, as the torch-free tests use
        return False


@contextlib.contextmanager
def _skip_if_extra_missing(name: str):
    try:
        yield
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in OPTIONAL and not _installed(missing):
            pytest.skip(f"{name} needs {missing}, which is not installed")
        raise


def test_the_walk_finds_the_packages():
    assert {"mslseg", "mslseg.runtime", "mslseg.export"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_all_names_import(name):
    namespace: dict = {}
    with _skip_if_extra_missing(name):
        module = importlib.import_module(name)
        for attr in module.__all__:
            getattr(module, attr)
        exec(f"from {name} import *", namespace)
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ lists a name twice"
    assert set(module.__all__) <= namespace.keys()


def test_runtime_exports_what_docs_runtime_md_uses():
    documented = {"Segmenter", "Segmentation", "Timings", "segment_stream", "StreamResult", "Frame",
                  "FrameRange", "open_sources", "palette_lut", "colorize", "overlay", "legend",
                  "MslsegError", "InputError", "ModelFormatError", "MissingDependencyError", "DataError",
                  "BackendError", "ModelMeta"}
    assert documented <= set(mslseg.runtime.__all__)

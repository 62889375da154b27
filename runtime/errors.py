"""Error types shared by every layer of mslseg. No dependencies: the runtime imports this.

Library code raises these with one actionable sentence (what was wrong, what is valid, what to
do); the CLI turns them into one line on stderr and exit code 1.
"""

from __future__ import annotations


class MslsegError(Exception):
    """Base class of every user-facing mslseg error."""


class InputError(MslsegError, ValueError):
    """A value handed to mslseg (an array, an option, a path) is not valid."""


class DataError(MslsegError):
    """A dataset, image or video on disk is missing, unreadable or inconsistent."""


class ModelFormatError(MslsegError):
    """A checkpoint, ONNX model or engine cannot be read or does not fit what was asked."""


class ConfigError(MslsegError):
    """A configuration file or override is invalid."""


class MissingDependencyError(MslsegError, ImportError):
    """An optional dependency (an extra) is not installed."""


class ProviderLoadError(MissingDependencyError):
    """An ONNX Runtime execution provider was asked for but did not load (the session would run on the CPU)."""


class TrainingError(MslsegError):
    """Training or adaptation cannot continue (a non-finite loss, say)."""


class ExportError(MslsegError):
    """An export, a parity gate or an engine build failed."""


class OutputError(MslsegError):
    """An output cannot be written: the disk is full, a quota or file-size limit is reached, or the
    folder is read-only or not writable. Nothing partial is left under the output's final name."""


class BackendError(MslsegError):
    """An inference engine failed while running (a CUDA or TensorRT call, a closed segmenter)."""


def require(module: str, extra: str, purpose: str):
    """Import `module`, or raise MissingDependencyError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed "
            f"({exc}); install mslseg[{extra}] (in a checkout: pip install -e '.[{extra}]'; from a wheel: "
            f"pip install 'mslseg-<version>-py3-none-any.whl[{extra}]')"
        ) from None

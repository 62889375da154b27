"""mslseg.runtime: torch-free inference (ONNX Runtime, TensorRT) for robots and video.

Importing this package never imports torch.
"""

from mslseg.runtime.errors import (
    DataError,
    InputError,
    MissingDependencyError,
    ModelFormatError,
    MslsegError,
)
from mslseg.runtime.metadata import ModelMeta, Normalization

__all__ = [
    "DataError",
    "InputError",
    "MissingDependencyError",
    "ModelFormatError",
    "ModelMeta",
    "MslsegError",
    "Normalization",
]

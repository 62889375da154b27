"""Segmentation models behind one protocol (`SegModel`), and the registry of architectures.

Importing this package imports torch; the registry, `mslseg.architectures`, does not (the CLI reads it).
"""

from mslseg.architectures import MODELS, Architecture, Recipe, architecture
from mslseg.models.base import SegModel, split_output
from mslseg.models.deeplabv2 import ASPPClassifier, DeepLabV2, ModelSpec, deeplabv2

__all__ = ["MODELS", "ASPPClassifier", "Architecture", "DeepLabV2", "ModelSpec", "Recipe", "SegModel",
           "architecture", "deeplabv2", "split_output"]

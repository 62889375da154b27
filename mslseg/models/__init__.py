"""DeepLab-v2 models and their builders."""

from mslseg.models.deeplabv2 import ASPPClassifier, DeepLabV2, ModelSpec, deeplabv2

__all__ = ["ASPPClassifier", "DeepLabV2", "ModelSpec", "deeplabv2"]

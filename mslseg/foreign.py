"""Import of foreign weights into mslseg's DeepLab-v2, strictly and by explicit format.

Formats (chosen by the user, never guessed from a file name):
- ``msl``: a DeepLab-v2 trained by MaxSquareLoss / AdaptSegNet (``{'state_dict': ...}`` or a bare
  state dict, keys maybe prefixed ``module.``; ``layer5``/``layer6`` are the layer3/layer4
  classifiers of the multi-level model, ``layer5`` alone the layer4 classifier of the
  single-level one). Selects the 2-branch classifier those models were trained with.
- ``deeplab-imagenet``: the DeepLab ImageNet init file (keys carry one more leading component such
  as ``Scale.``); its COCO classifier is skipped, heads start fresh.
- ``torchvision-resnet``: a torchvision ResNet-18/50/101 ImageNet state dict; backbone only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from mslseg.checkpoint import read_weights_file
from mslseg.classes import default_class_names, palette_for
from mslseg.models.deeplabv2 import DeepLabV2, ModelSpec
from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ModelMeta, Normalization
from mslseg.runtime.sizes import Size

log = logging.getLogger(__name__)

_BACKBONE_TOP = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


@dataclass
class MappedState:
    """A foreign state dict renamed to mslseg's keys, with what was left out and why."""

    state: dict[str, Tensor]
    skipped: dict[str, str] = field(default_factory=dict)  # foreign key -> reason
    backbone_only: bool = False


def strip_wrappers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop DataParallel's ``module.`` and a wrapper component such as ``Scale.``."""
    out = {k.removeprefix("module."): v for k, v in state.items()}
    known = (*_BACKBONE_TOP, "layer5", "layer6", "fc")
    if out and not any(k.split(".")[0] in known for k in out):
        firsts = {k.split(".")[0] for k in out}
        if len(firsts) == 1:
            out = {k.split(".", 1)[1]: v for k, v in out.items()}
    return out


def map_msl_keys(state: dict[str, Tensor]) -> MappedState:
    """MaxSquareLoss/AdaptSegNet DeepLab-v2 keys -> mslseg keys (pure function)."""
    state = strip_wrappers(state)
    multi = any(k.startswith("layer6.") for k in state)
    heads = {"layer5": "head_aux", "layer6": "head_main"} if multi else {"layer5": "head_main"}
    mapped, skipped = {}, {}
    for key, value in state.items():
        top, _, rest = key.partition(".")
        if top in _BACKBONE_TOP:
            mapped[f"backbone.{key}"] = value
        elif top in heads and rest.startswith("conv2d_list."):
            mapped[f"{heads[top]}.convs.{rest.removeprefix('conv2d_list.')}"] = value
        else:
            skipped[key] = "not part of DeepLab-v2"
    return MappedState(mapped, skipped)


def map_deeplab_imagenet_keys(state: dict[str, Tensor]) -> MappedState:
    """DeepLab ImageNet init file (``Scale.`` prefix, COCO classifier) -> backbone keys."""
    state = strip_wrappers(state)
    mapped, skipped = {}, {}
    for key, value in state.items():
        if key.split(".")[0] in _BACKBONE_TOP:
            mapped[f"backbone.{key}"] = value
        else:
            skipped[key] = "classifier of the init file (heads start fresh)"
    return MappedState(mapped, skipped, backbone_only=True)


def map_torchvision_resnet_keys(state: dict[str, Tensor]) -> MappedState:
    """torchvision ResNet ImageNet keys -> backbone keys; the fc layer is skipped."""
    state = strip_wrappers(state)
    mapped, skipped = {}, {}
    for key, value in state.items():
        if key.split(".")[0] in _BACKBONE_TOP:
            mapped[f"backbone.{key}"] = value
        else:
            skipped[key] = "ImageNet classifier (heads start fresh)"
    return MappedState(mapped, skipped, backbone_only=True)


KEY_MAPPERS: dict[str, Callable[[dict[str, Tensor]], MappedState]] = {
    "msl": map_msl_keys,
    "deeplab-imagenet": map_deeplab_imagenet_keys,
    "torchvision-resnet": map_torchvision_resnet_keys,
}
NORMALIZATION = {
    "msl": Normalization.official,
    "deeplab-imagenet": Normalization.official,
    "torchvision-resnet": Normalization.imagenet,
}
# the size a model of each format runs at by default: MaxSquareLoss / AdaptSegNet adapted and scored
# their released models on Cityscapes at 1024x512 (bicubic); backbone-only files get theirs from training
RUN_SIZE = {"msl": Size(1024, 512)}


def infer_backbone(state: dict[str, Tensor]) -> str:
    """resnet18/50/101 from the number of layer3 blocks and the block type."""
    blocks = {k.split(".")[2] for k in state if k.startswith("backbone.layer3.")}
    bottleneck = any(".conv3." in k for k in state)
    by_shape = {(2, False): "resnet18", (6, True): "resnet50", (23, True): "resnet101"}
    name = by_shape.get((len(blocks), bottleneck))
    if name is None:
        raise ModelFormatError(
            f"weights hold a ResNet with {len(blocks)} layer3 blocks "
            f"({'bottleneck' if bottleneck else 'basic'}); supported: ResNet-18, -50, -101"
        )
    return name


def load_state_strict(model: DeepLabV2, mapped: MappedState, *, partial: bool, source: str) -> list[str]:
    """Copy `mapped` into `model`; shapes must match; missing/unexpected keys are an error unless
    `partial`. Returns the model keys left at their initial values."""
    own = model.state_dict()
    expected = {k for k in own if not k.endswith("num_batches_tracked")}
    if mapped.backbone_only:
        expected = {k for k in expected if k.startswith("backbone.")}
    unexpected = sorted(k for k in mapped.state if k not in own)
    mismatched = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in mapped.state.items() if k in own and v.shape != own[k].shape
    )
    missing = sorted(expected - set(mapped.state))
    if mismatched:
        raise ModelFormatError(f"{source}: shapes do not match: {', '.join(mismatched[:5])}")
    if (missing or unexpected) and not partial:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({', '.join(unexpected[:5])})")
        raise ModelFormatError(
            f"{source}: {'; '.join(parts)}; check --from, or pass --partial to load what fits"
        )
    with torch.no_grad():
        for k, v in mapped.state.items():
            if k in own:
                own[k].copy_(v)
    return missing


def import_foreign(path: str | Path, fmt: str, *, num_classes: int | None = None,
                   multi_level: bool = True, partial: bool = False) -> tuple[DeepLabV2, ModelMeta]:
    """Build a DeepLab-v2 from foreign weights in format `fmt` (see the module docstring)."""
    if fmt not in KEY_MAPPERS:
        raise ModelFormatError(f"unknown weights format '{fmt}'; valid: {', '.join(KEY_MAPPERS)}")
    data = read_weights_file(path)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()) or not data:
        raise ModelFormatError(f"{path} holds no state dict of tensors; is it a weights file?")
    mapped = KEY_MAPPERS[fmt](data)
    if not mapped.state:
        raise ModelFormatError(f"{path} has no ResNet/DeepLab keys for format '{fmt}'; check --from")
    backbone = infer_backbone(mapped.state)
    if fmt == "msl":
        if "head_main.convs.0.weight" not in mapped.state:
            raise ModelFormatError(f"{path} has no DeepLab-v2 classifier (layer5/layer6); check --from")
        file_classes = mapped.state["head_main.convs.0.weight"].shape[0]
        if num_classes is not None and num_classes != file_classes:
            raise ModelFormatError(f"{path} predicts {file_classes} classes, not {num_classes}")
        spec = ModelSpec(backbone, file_classes, any(k.startswith("head_aux.") for k in mapped.state), 2)
    else:
        spec = ModelSpec(backbone, num_classes or 19, multi_level, 4)
    model = DeepLabV2(spec)
    fresh = load_state_strict(model, mapped, partial=partial, source=str(path))
    for key, why in mapped.skipped.items():
        log.info("skipped %s: %s", key, why)
    if fresh:
        log.warning("%d tensors of %s were not in the file and keep their initial values", len(fresh), path)
    names = default_class_names(spec.num_classes)
    meta = ModelMeta(
        num_classes=spec.num_classes, class_names=names, palette=palette_for(names),
        normalization=NORMALIZATION[fmt](), arch=f"deeplabv2-{backbone}", train_size=RUN_SIZE.get(fmt),
    )
    return model.eval(), meta

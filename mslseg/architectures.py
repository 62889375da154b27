"""The architectures mslseg trains, each one entry: how to build it, how it learns, how it exports.

`MODELS` is the one list: config validation, the CLI's help and `--model` choices, the loop, the
checkpoint loader and int8 export all read it. Adding a model is one entry here (and its module);
`python:MODULE:FACTORY` names a user's network without an entry (mslseg.models.factory).

Recipes are data, not code paths: the optimiser and its settings, the head's learning-rate
multiplier, whether normalisation layers take weight decay, and the input normalisation. The run
config's `optim` and `model.normalization` fields that a config does not set take the recipe of
its architecture (training.config.apply_recipe).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mslseg.runtime.errors import ModelFormatError

if TYPE_CHECKING:  # the registry itself imports no torch: the CLI's help reads it
    from mslseg.models.base import SegModel

OPTIMIZERS = ("sgd", "adamw")
PREFIX = "python:"  # python:MODULE:FUNCTION names a user's network (mslseg.models.factory)


def is_factory(arch: str | None) -> bool:
    return bool(arch) and arch.startswith(PREFIX)


@dataclass(frozen=True)
class Recipe:
    """How an architecture learns and what input it takes."""

    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 2.5e-4  # base (encoder) learning rate
    head_lr_mult: float = 10.0  # heads learn this many times faster
    momentum: float = 0.9  # SGD momentum; AdamW beta1
    weight_decay: float = 5e-4
    poly_power: float = 0.9  # lr = base * (1 - it / iterations) ** power
    norm_decay: bool = True  # weight decay on normalisation layers' weights and biases
    normalization: str = "official"  # official (BGR, Caffe mean) | imagenet (RGB, mean/std)


# DeepLab-v2 as the paper trains it (MaxSquareLoss, AdaptSegNet): SGD 2.5e-4, poly 0.9, heads 10x
PAPER = Recipe()
# SegFormer as its authors train it (mmsegmentation configs): AdamW 6e-5, weight decay 0.01, poly 1.0,
# head 10x, no decay on norms; ImageNet normalisation (the MiT encoders' pretraining)
SEGFORMER = Recipe(optimizer="adamw", lr=6e-5, weight_decay=0.01, poly_power=1.0, norm_decay=False,
                   normalization="imagenet")
# a user's network: the paper's optimiser with the ImageNet input of torchvision and timm encoders
FACTORY = Recipe(normalization="imagenet")


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str  # one line for the CLI help and the README
    recipe: Recipe
    build: Callable[..., SegModel]  # (num_classes=, multi_level=, backbone=, branches=) -> random weights
    rebuild: Callable[[dict[str, Any]], SegModel]  # a checkpoint's spec -> the module (random weights)
    aux: str  # where multi-level guidance's auxiliary head sits
    int8_ops: tuple[str, ...] = ("Conv",)  # the ops int8 export quantises (the rest stays float)


def _deeplab(**kw: Any) -> SegModel:
    from mslseg.models.deeplabv2 import deeplabv2

    return deeplabv2(kw["backbone"], num_classes=kw["num_classes"], multi_level=kw["multi_level"],
                     branches=kw["branches"])


def _deeplab_spec(spec: dict[str, Any]) -> SegModel:
    from mslseg.models.deeplabv2 import DeepLabV2, ModelSpec

    return DeepLabV2(ModelSpec.from_dict(spec))


def _segformer(variant: str) -> Callable[..., SegModel]:
    def build(**kw: Any) -> SegModel:
        from mslseg.models.segformer import build_segformer

        return build_segformer(variant, num_classes=kw["num_classes"], multi_level=kw["multi_level"])
    return build


def _segformer_spec(spec: dict[str, Any]) -> SegModel:
    from mslseg.models.segformer import segformer_from_spec

    return segformer_from_spec(spec)


MODELS: dict[str, Architecture] = {
    "deeplabv2": Architecture(
        "deeplabv2", "DeepLab-v2, the paper's (ResNet-101/50/18 by model.backbone, ASPP heads)", PAPER,
        _deeplab, _deeplab_spec, aux="an ASPP head on layer3"),
    **{f"segformer-{v}": Architecture(
        f"segformer-{v}", f"SegFormer-{v.upper()} (transformers; MiT-{v.upper()} encoder, all-MLP decoder)",
        SEGFORMER, _segformer(v), _segformer_spec, aux="a 3x3 conv head on stage 3",
        # attention and MLP matmuls hold most of SegFormer's compute; LayerNorm, Softmax, GELU stay float
        int8_ops=("Conv", "MatMul"))
       for v in ("b0", "b1", "b2", "b3", "b4", "b5")},
}
# checkpoints of a SegFormer whose config is none of B0..B5 record this family name
MODELS["segformer"] = Architecture("segformer", "SegFormer of another configuration (from a checkpoint)",
                                   SEGFORMER, _segformer("b0"), _segformer_spec,
                                   aux="a 3x3 conv head on stage 3", int8_ops=("Conv", "MatMul"))
CHOOSABLE = tuple(n for n in MODELS if n != "segformer")  # what --model lists
FACTORY_HELP = f"{PREFIX}MODULE:FUNCTION"
# --factory on the commands that load a .pt (evaluate, export, infer, bench)
FACTORY_OPTION_HELP = (f"For a checkpoint of your own network: the {FACTORY_HELP} that built it. mslseg imports "
                       "no code a checkpoint names unless you name the same factory here.")


def architecture(name: str) -> Architecture:
    """The registry entry of `name` (a factory's entry for python:...); ModelFormatError naming the valid ones."""
    if is_factory(name):
        return Architecture(name, "a user's network", FACTORY, _factory(name), _factory_spec,
                            aux="the network's own auxiliary output, if it gives one")
    if name not in MODELS:
        raise ModelFormatError(f"unknown model '{name}'; valid: {', '.join(CHOOSABLE)}, or {FACTORY_HELP}")
    return MODELS[name]


def architecture_of_meta(arch: str) -> Architecture:
    """The entry of a model whose metadata names it `arch`: metadata names a model more finely than
    the registry (deeplabv2-resnet18 is the entry deeplabv2; segformer-b0 and python:... are entries)."""
    if is_factory(arch) or arch in MODELS:
        return architecture(arch)
    return architecture(arch.split("-", 1)[0])


def _factory(name: str) -> Callable[..., SegModel]:
    def build(**kw: Any) -> SegModel:
        from mslseg.models.factory import FactoryModel

        return FactoryModel(name, kw["num_classes"])
    return build


def _factory_spec(spec: dict[str, Any]) -> SegModel:
    # importing the code a checkpoint names, on its say-so alone, is what mslseg never does
    raise ModelFormatError(f"a checkpoint of {spec.get('factory')} is rebuilt with the factory its caller names: "
                           "build_model_from_spec(..., factory=...)")


def build_model_from_spec(arch: str, spec: dict[str, Any], *, factory: str | None = None,
                          source: str = "checkpoint") -> SegModel:
    """Rebuild a checkpoint's module (random weights). A python: factory needs the caller to name the
    same code (models.factory.check_factory_allowed), and only the caller's `factory` is imported."""
    if is_factory(arch):
        from mslseg.models.factory import FactoryModel, check_factory_allowed

        check_factory_allowed(arch, factory, source, spec.get("code"))
        if spec.get("factory") != arch:
            raise ModelFormatError(f"{source}: its spec names {spec.get('factory')} but its arch {arch}; "
                                   "the checkpoint is damaged")
        return FactoryModel(factory, int(spec["num_classes"]))
    return architecture(arch).rebuild(spec)


def models_help() -> str:
    """The --model help text, from the registry."""
    return ", ".join(CHOOSABLE) + f", or {FACTORY_HELP} (your own network)"

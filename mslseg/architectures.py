"""The architectures mslseg trains, each one entry: how to build it, how it learns, how it exports.

`MODELS` is the one list: config validation, the CLI's help and `--model` choices, the loop, the
checkpoint loader and int8 export all read it. Adding a model is one entry here (and its module):
how it builds and rebuilds, learns, exports, the model.* settings it alone takes (`options`) and
how it takes pretrained or foreign weights; `python:MODULE:FACTORY` names a user's network without
an entry (mslseg.models.factory). Every name of a model is parsed by `ModelRef.parse`, here only.

Recipes are data, not code paths: the optimiser and its settings, the head's learning-rate
multiplier, whether normalisation layers take weight decay, and the input normalisation. The run
config's `optim` and `model.normalization` fields that a config does not set take the recipe of
its architecture (training.config.apply_recipe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mslseg.runtime.errors import ModelFormatError

if TYPE_CHECKING:  # the registry itself imports no torch: the CLI's help reads it
    from mslseg.models.base import SegModel

OPTIMIZERS = ("sgd", "adamw")
PREFIX = "python:"  # python:MODULE:FUNCTION names a user's network (mslseg.models.factory)
HF_PREFIX = "hf:"  # hf:<hub id> names pretrained weights on the Hugging Face hub (model.init)
FACTORY_MESSAGE = ("write python:MODULE:FUNCTION (python:mypkg.nets:build_net, or python:nets.py:build_net)")


def is_factory(arch: str | None) -> bool:
    return bool(arch) and arch.startswith(PREFIX)


@dataclass(frozen=True)
class OptimRecipe:
    """How an architecture learns; `training.config.OptimConfig` is this plus lr_scale (one set of defaults)."""

    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 2.5e-4  # base (encoder) learning rate
    head_lr_mult: float = 10.0  # heads learn this many times faster
    momentum: float = 0.9  # SGD momentum; AdamW beta1
    weight_decay: float = 5e-4
    poly_power: float = 0.9  # lr = base * (1 - it / iterations) ** power
    norm_decay: bool = True  # weight decay on normalisation layers' weights and biases


@dataclass(frozen=True)
class Recipe(OptimRecipe):
    """How an architecture learns and what input it takes."""

    normalization: str = "official"  # official (BGR, Caffe mean) | imagenet (RGB, mean/std)


# DeepLab-v2 as the paper trains it (MaxSquareLoss, AdaptSegNet): SGD 2.5e-4, poly 0.9, heads 10x
PAPER = Recipe()
# SegFormer as its authors train it (mmsegmentation configs): AdamW 6e-5, weight decay 0.01, poly 1.0,
# head 10x, no decay on norms; ImageNet normalisation (the MiT encoders' pretraining)
SEGFORMER = Recipe(optimizer="adamw", lr=6e-5, weight_decay=0.01, poly_power=1.0, norm_decay=False,
                   normalization="imagenet")
# a user's network: the paper's optimiser with the ImageNet input of torchvision and timm encoders
FACTORY = Recipe(normalization="imagenet")
# DeepLab-v2's own model.* settings and their defaults (models.deeplabv2.ModelSpec takes them from here)
DEEPLAB_OPTIONS: Mapping[str, Any] = MappingProxyType({"backbone": "resnet101", "branches": 4})


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str  # one line for the CLI help and the README
    recipe: Recipe
    build: Callable[..., SegModel]  # (num_classes=, multi_level=, **options) -> random weights
    rebuild: Callable[[dict[str, Any]], SegModel]  # a checkpoint's spec -> the module (random weights)
    aux: str  # where multi-level guidance's auxiliary head sits
    int8_ops: tuple[str, ...] = ("Conv",)  # the ops int8 export quantises (the rest stays float)
    family: str = ""  # what the name starts with: segformer-b0's segformer (its own name where empty)
    variant: str | None = None  # the size the name ends with: segformer-b0's b0
    # model.* settings only this architecture takes, with their defaults (model.backbone: DeepLab-v2's)
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    named_by: str | None = None  # the option a model's full name ends with: deeplabv2-resnet18 (backbone)
    choosable: bool = True  # --model lists it (the family entry of other SegFormer shapes: no)
    # model.init that is no .pt (a folder, hf:<id>): (init, num_classes=, multi_level=) -> (model, class names)
    pretrained: Callable[..., tuple[SegModel, tuple[str, ...] | None]] | None = None
    # model.init with model.init_format (foreign weights): (init, fmt, num_classes=, multi_level=) -> (model, meta)
    foreign_init: Callable[..., tuple[SegModel, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name)


def _deeplab(**kw: Any) -> SegModel:
    from mslseg.models.deeplabv2 import deeplabv2

    options = {k: kw[k] for k in DEEPLAB_OPTIONS if kw.get(k) is not None}
    return deeplabv2(num_classes=kw["num_classes"], multi_level=kw["multi_level"], **options)


def _deeplab_spec(spec: dict[str, Any]) -> SegModel:
    from mslseg.models.deeplabv2 import DeepLabV2, ModelSpec

    return DeepLabV2(ModelSpec.from_dict(spec))


def _deeplab_foreign(init: str, fmt: str, **kw: Any) -> tuple[SegModel, Any]:
    from mslseg.foreign import import_foreign

    return import_foreign(init, fmt, **kw)


def _segformer(variant: str) -> Callable[..., SegModel]:
    def build(**kw: Any) -> SegModel:
        from mslseg.models.segformer import build_segformer

        return build_segformer(variant, num_classes=kw["num_classes"], multi_level=kw["multi_level"])
    return build


def _segformer_spec(spec: dict[str, Any]) -> SegModel:
    from mslseg.models.segformer import segformer_from_spec

    return segformer_from_spec(spec)


def _segformer_pretrained(init: str, **kw: Any) -> tuple[SegModel, tuple[str, ...] | None]:
    from mslseg.models.segformer import pretrained_segformer

    return pretrained_segformer(init, **kw)


SEGFORMER_SIZES = ("b0", "b1", "b2", "b3", "b4", "b5")  # models.segformer.VARIANTS holds their shapes
# attention and MLP matmuls hold most of SegFormer's compute; LayerNorm, Softmax, GELU stay float
_SEGFORMER = dict(recipe=SEGFORMER, rebuild=_segformer_spec, aux="a 3x3 conv head on stage 3",
                  int8_ops=("Conv", "MatMul"), family="segformer", pretrained=_segformer_pretrained)
MODELS: dict[str, Architecture] = {
    "deeplabv2": Architecture(
        "deeplabv2", "DeepLab-v2, the paper's (ResNet-101/50/18 by model.backbone, ASPP heads)", PAPER,
        _deeplab, _deeplab_spec, aux="an ASPP head on layer3", options=DEEPLAB_OPTIONS, named_by="backbone",
        foreign_init=_deeplab_foreign),
    **{f"segformer-{v}": Architecture(
        f"segformer-{v}", f"SegFormer-{v.upper()} (transformers; MiT-{v.upper()} encoder, all-MLP decoder)",
        build=_segformer(v), variant=v, **_SEGFORMER)
       for v in SEGFORMER_SIZES},
    # checkpoints of a SegFormer whose config is none of B0..B5 record the family name
    "segformer": Architecture("segformer", "SegFormer of another configuration (from a checkpoint)",
                              build=_segformer("b0"), choosable=False, **_SEGFORMER),
}
CHOOSABLE = tuple(n for n, a in MODELS.items() if a.choosable)  # what --model lists
# the model.* settings some architectures take, with their defaults (the first taker's)
OPTION_DEFAULTS: dict[str, Any] = {k: v for a in reversed(MODELS.values()) for k, v in a.options.items()}
FACTORY_HELP = f"{PREFIX}MODULE:FUNCTION"
# --factory on the commands that load a .pt (evaluate, export, infer, bench)
FACTORY_OPTION_HELP = (f"For a checkpoint of your own network: the {FACTORY_HELP} that built it. mslseg imports "
                       "no code a checkpoint names unless you name the same factory here.")


@dataclass(frozen=True)
class ModelRef:
    """A model named by text, parsed here and nowhere else: a registry entry (deeplabv2,
    segformer-b0, the family segformer), a full name in metadata (deeplabv2-resnet18: the entry
    deeplabv2, backbone resnet18), python:MODULE:FUNCTION (MODULE a module or a .py path), hf:<id>."""

    text: str  # as written
    kind: str  # builtin | python | hf
    family: str  # builtin: deeplabv2 | segformer; otherwise the kind
    variant: str | None = None  # segformer-b0's b0; deeplabv2-resnet18's resnet18 (its named_by option)
    entry: str | None = None  # builtin: its MODELS key
    module: str | None = None  # python: mypkg.nets, or nets.py / path/to/nets.py
    function: str | None = None  # python
    ident: str | None = None  # hf: the hub id

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """The reference `text` names; ModelFormatError listing the valid names."""
        if text.startswith(PREFIX):
            parts = text.removeprefix(PREFIX).rsplit(":", 1)
            if len(parts) != 2 or not all(parts):
                raise ModelFormatError(f"'{text}' does not name a factory; {FACTORY_MESSAGE}")
            return cls(text, "python", "python", module=parts[0], function=parts[1])
        if text.startswith(HF_PREFIX):
            if not text.removeprefix(HF_PREFIX):
                raise ModelFormatError(f"'{text}' names no hub id; write {HF_PREFIX}<owner>/<name>")
            return cls(text, "hf", "hf", ident=text.removeprefix(HF_PREFIX))
        if text in MODELS:
            arch = MODELS[text]
            return cls(text, "builtin", arch.family, arch.variant, text)
        family, _, rest = text.partition("-")
        if rest and family in MODELS and MODELS[family].named_by:
            return cls(text, "builtin", family, rest, family)
        raise ModelFormatError(unknown_model(text))

    @staticmethod
    def name_of(entry: str, **options: Any) -> str:
        """A model's full name: the entry, and the option it is named by (deeplabv2-resnet18)."""
        by = MODELS[entry].named_by
        return f"{entry}-{options[by]}" if by and options.get(by) else entry

    @property
    def is_file(self) -> bool:
        """python: whether MODULE is a .py path."""
        return bool(self.module) and self.module.endswith(".py")


def unknown_model(name: str) -> str:
    return f"unknown model '{name}'; valid: {', '.join(CHOOSABLE)}, or {FACTORY_HELP}"


def entry_of(family: str, variant: str | None) -> str:
    """The entry that a model of `family` and size `variant` records: segformer-b0, else the family."""
    return next((n for n, a in MODELS.items() if a.family == family and a.variant == variant and variant), family)


def architecture(name: str) -> Architecture:
    """The registry entry of `name` (a factory's entry for python:...); ModelFormatError naming the valid ones."""
    ref = ModelRef.parse(name)
    if ref.kind == "python":
        return Architecture(name, "a user's network", FACTORY, _factory(name), _factory_spec,
                            aux="the network's own auxiliary output, if it gives one")
    if ref.kind == "hf":
        takers = ", ".join(n for n in CHOOSABLE if MODELS[n].pretrained)
        raise ModelFormatError(f"'{name}' names pretrained weights, not an architecture; give it as model.init "
                               f"(--init) with one of {takers}")
    if ref.entry != name:  # a full name from metadata: the config says it in two keys
        by = MODELS[ref.entry].named_by
        raise ModelFormatError(f"'{name}' is {ref.entry} with model.{by} {ref.variant}; "
                               f"set model.arch {ref.entry} and model.{by} {ref.variant}")
    return MODELS[name]


def architecture_of_meta(arch: str) -> Architecture:
    """The entry of a model whose metadata names it `arch`: metadata names a model more finely than
    the registry (deeplabv2-resnet18 is the entry deeplabv2; segformer-b0 and python:... are entries)."""
    ref = ModelRef.parse(arch)
    return architecture(ref.entry if ref.kind == "builtin" else arch)


def option_error(key: str, arch: str, shown: str | None = None) -> str:
    """What to say when model.`key` (an option of other architectures) is set for `arch`; `shown`:
    how to name the key (the CLI flag that set it)."""
    takers = ", ".join(n for n, a in MODELS.items() if key in a.options)
    family = MODELS[arch].family if arch in MODELS else None
    sizes = [n for n in CHOOSABLE if family and MODELS[n].family == family and MODELS[n].variant]
    hint = f"{family} sizes are {sizes[0]}..{sizes[-1]}" if len(sizes) > 1 else f"drop it for {arch}"
    return f"{shown or 'model.' + key} applies to {takers} only; {hint}"


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
    if ModelRef.parse(arch).kind == "python":
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

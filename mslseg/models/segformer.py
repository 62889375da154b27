"""SegFormer (Xie et al. 2021) through Hugging Face transformers, behind mslseg's model protocol.

B0..B5 are built from their configurations (the paper's Table 1: hidden sizes, depths, decoder
width), randomly initialised; weights come from a local `save_pretrained` folder or a hub id
(`hf:nvidia/segformer-b0-finetuned-cityscapes-1024-1024`, where the hub is reachable). A
checkpoint stores the architecture fields of the transformers config, so `load_model` rebuilds
the same network without the hub.

The decode head gives logits at 1/4 of the input; they are resized to the input bilinearly
(align_corners=False, transformers' own convention). Multi-level guidance gets an auxiliary head
on stage 3 (the stage before the last, as DeepLab's aux head sits on layer3): one 3x3 conv to the
classes, as DeepLab-v2's aux head is one dilated 3x3 conv per branch. SegFormer normalises with
LayerNorm, which keeps no statistics; its only BatchNorm is the decode head's, after the fusion
of the four stages. That one layer is all that BN-only adaptation (and `model.bn`) can touch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mslseg.architectures import HF_PREFIX, ModelRef, entry_of
from mslseg.models.base import SegModel, to_input_size
from mslseg.runtime.errors import ModelFormatError, require

log = logging.getLogger(__name__)

# (hidden sizes, depths, decoder width) of the MiT encoders B0..B5 (SegFormer, Table 1 and 7); the
# registry's SEGFORMER_SIZES names the same sizes (a test holds them together)
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}
# the transformers config fields that define the network (what a checkpoint stores)
_ARCH_FIELDS = ("num_channels", "num_encoder_blocks", "depths", "sr_ratios", "hidden_sizes", "patch_sizes",
                "strides", "num_attention_heads", "mlp_ratios", "hidden_act", "hidden_dropout_prob",
                "attention_probs_dropout_prob", "classifier_dropout_prob", "initializer_range",
                "drop_path_rate", "layer_norm_eps", "decoder_hidden_size", "num_labels")
AUX_STAGE = 2  # stage 3 of 4, counted from 0


def _transformers() -> Any:
    return require("transformers", "train", "SegFormer")


def variant_config(variant: str, num_classes: int) -> Any:
    """The transformers SegformerConfig of B0..B5 with `num_classes` labels."""
    if variant not in VARIANTS:
        raise ModelFormatError(f"unknown SegFormer variant '{variant}'; valid: {', '.join(VARIANTS)}")
    hidden, depths, decoder = VARIANTS[variant]
    return _transformers().SegformerConfig(hidden_sizes=list(hidden), depths=list(depths),
                                           decoder_hidden_size=decoder, num_labels=num_classes)


def variant_of(config: Any) -> str | None:
    """Which of B0..B5 a transformers config is (None: another shape)."""
    for name, (hidden, depths, decoder) in VARIANTS.items():
        if (tuple(config.hidden_sizes), tuple(config.depths), config.decoder_hidden_size) == (hidden, depths, decoder):
            return name
    return None


class SegFormer(SegModel):
    """A transformers SegformerForSemanticSegmentation (as `net`), plus an optional stage-3 aux head."""

    def __init__(self, config: Any, *, multi_level: bool = False, net: nn.Module | None = None) -> None:
        super().__init__()
        tf = _transformers()
        self.config = config
        self.net = net if net is not None else tf.SegformerForSemanticSegmentation(config)
        self.head_aux = (nn.Conv2d(config.hidden_sizes[AUX_STAGE], config.num_labels, 3, padding=1)
                         if multi_level else None)
        if self.head_aux is not None:
            nn.init.normal_(self.head_aux.weight, 0.0, 0.01)
            nn.init.zeros_(self.head_aux.bias)
        self.arch = entry_of("segformer", variant_of(config))

    @property
    def num_classes(self) -> int:
        return int(self.config.num_labels)

    @property
    def has_aux(self) -> bool:
        return self.head_aux is not None

    def spec_dict(self) -> dict[str, Any]:
        full = self.config.to_dict()
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in full.items() if k in _ARCH_FIELDS}
        fields["num_labels"] = self.num_classes  # transformers keeps it as id2label, which is not stored
        return {"config": fields, "multi_level": self.has_aux}

    def is_head(self, name: str) -> bool:
        return name.startswith(("net.decode_head.", "head_aux."))

    def feature_encoder(self) -> tuple[nn.Module, Any]:
        return self.net.segformer, _last_stage  # the MiT's last stage, as DAFormer's feature distance

    def forward(self, x: Tensor, with_aux: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
        """(N, 3, H, W) normalised -> (N, C, H, W) logits; with_aux -> (main, aux)."""
        hidden = self.net.segformer(x, output_hidden_states=True, return_dict=True).hidden_states
        main = to_input_size(self.net.decode_head(hidden), x)
        if not with_aux:
            return main
        aux = to_input_size(self.head_aux(hidden[AUX_STAGE]), x) if self.head_aux is not None else None
        return main, aux


def _last_stage(output: Any) -> Tensor:
    return output.last_hidden_state  # (N, C, h, w): the config reshapes the last stage


def build_segformer(variant: str, *, num_classes: int, multi_level: bool = False) -> SegFormer:
    """SegFormer-B0..B5 with random weights."""
    return SegFormer(variant_config(variant, num_classes), multi_level=multi_level)


def segformer_from_spec(spec: dict[str, Any]) -> SegFormer:
    """The module a checkpoint's spec describes (random weights; the caller loads the state)."""
    config = spec.get("config")
    if not isinstance(config, dict):
        raise ModelFormatError("the SegFormer spec has no transformers config; the checkpoint is damaged")
    unknown = set(config) - set(_ARCH_FIELDS)
    if unknown:
        raise ModelFormatError(f"unknown SegFormer config keys {sorted(unknown)}; upgrade mslseg")
    return SegFormer(_transformers().SegformerConfig(**config), multi_level=bool(spec.get("multi_level")))


def pretrained_segformer(source: str, *, num_classes: int, multi_level: bool = False) -> tuple[SegFormer, tuple[str, ...] | None]:
    """SegFormer from a `save_pretrained` folder or `hf:<hub id>`; returns it and its class names.

    A folder with a segmentation head of `num_classes` classes keeps it (its class names come from
    the config's id2label); an encoder-only folder (an ImageNet MiT, SegformerModel or
    SegformerForImageClassification) gets a new head of `num_classes`, and no class names.
    """
    tf = _transformers()
    hub = source.startswith(HF_PREFIX)
    ident = ModelRef.parse(source).ident if hub else source
    if not hub and not (Path(source) / "config.json").is_file():
        raise ModelFormatError(f"{source} is not a save_pretrained folder (no config.json); give such a folder, "
                               f"an mslseg checkpoint (.pt), or a hub id as {HF_PREFIX}<id>")
    try:
        config = tf.AutoConfig.from_pretrained(ident)
    except (OSError, ValueError) as exc:
        where = "the hub is out of reach or the id is wrong" if hub else "check the folder"
        raise ModelFormatError(f"cannot read the SegFormer config of {ident} ({str(exc).splitlines()[0][:160]}); "
                               f"{where}") from None
    if getattr(config, "model_type", "") != "segformer":
        raise ModelFormatError(f"{ident} holds a {getattr(config, 'model_type', 'unknown')} model, not a SegFormer")
    has_head = any("SemanticSegmentation" in a for a in (config.architectures or ()))
    names = None
    if has_head:
        if config.num_labels != num_classes:
            raise ModelFormatError(f"{ident} predicts {config.num_labels} classes but the data has {num_classes}; "
                                   "use a model or class set that match")
        labels = getattr(config, "id2label", None) or {}
        names = tuple(str(labels.get(i, labels.get(str(i), i))) for i in range(num_classes))
    else:
        config.num_labels = num_classes
        log.info("%s has no segmentation head: a new decode head of %d classes starts from random weights",
                 ident, num_classes)
    try:  # quiet: transformers' progress bar and its table of fresh head weights (the line above says it)
        verbosity, bar = tf.utils.logging.get_verbosity(), tf.utils.logging.is_progress_bar_enabled()
        tf.utils.logging.set_verbosity_error()
        tf.utils.logging.disable_progress_bar()
        try:
            net = tf.SegformerForSemanticSegmentation.from_pretrained(ident, config=config)
        finally:
            tf.utils.logging.set_verbosity(verbosity)
            if bar:
                tf.utils.logging.enable_progress_bar()
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"cannot load the SegFormer weights of {ident} ({str(exc).splitlines()[0][:160]})") from None
    return SegFormer(net.config, multi_level=multi_level, net=net), names

"""Model metadata: everything the runtime needs to normalise, label and colour.

It travels with every artefact: in a checkpoint as a plain dict, in ONNX `metadata_props` under
the key ``mslseg`` as JSON, beside a TensorRT engine as ``model.json``. It is parsed as data
(JSON), never evaluated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from mslseg.runtime.errors import InputError, ModelFormatError, MslsegError
from mslseg.runtime.sizes import DEFAULT_INTERPOLATION, INTERPOLATIONS, NATIVE, Size, parse_run_size

ONNX_METADATA_KEY = "mslseg"
INPUT_KINDS = ("float", "uint8")
OUTPUT_KINDS = ("logits", "probs", "labels")
CHANNEL_ORDERS = ("bgr", "rgb")
PRECISIONS = ("fp32", "fp16", "int8")


# the largest class count whose ids fit in uint8 beside the ignore label 255 (ids 0..254)
MAX_UINT8_CLASSES = 255


def label_dtype(num_classes: int) -> np.dtype:
    """The dtype of the label maps the runtime hands out: uint8 up to 255 classes, uint16 beyond."""
    return np.dtype(np.uint8 if num_classes <= MAX_UINT8_CLASSES else np.uint16)


def graph_label_dtype(num_classes: int) -> np.dtype:
    """The dtype of an exported graph's label output: uint8 up to 255 classes, int32 beyond.

    Not uint16: TensorRT has no uint16 I/O; the host turns int32 into `label_dtype` afterwards.
    """
    return np.dtype(np.uint8 if num_classes <= MAX_UINT8_CLASSES else np.int32)


@dataclass(frozen=True)
class Normalization:
    """How a uint8 frame becomes network input: reorder channels, then (x - mean) / std.

    mean and std are in pixel units (0..255), per channel in the network's channel order.
    """

    order: str = "bgr"  # channel order the network was trained on
    mean: tuple[float, float, float] = (104.00698793, 116.66876762, 122.67891434)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def official(cls) -> Normalization:
        """The DeepLab-v2 / MaxSquareLoss convention: BGR, Caffe mean subtraction, no std."""
        return cls()

    @classmethod
    def imagenet(cls) -> Normalization:
        """torchvision's ImageNet convention: RGB, mean/std of ImageNet in pixel units."""
        return cls(
            order="rgb",
            mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
            std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
        )

    @classmethod
    def named(cls, name: str) -> Normalization:
        presets = {"official": cls.official, "imagenet": cls.imagenet}
        if name not in presets:
            raise ModelFormatError(
                f"unknown normalisation '{name}'; valid: {', '.join(presets)}"
            )
        return presets[name]()

    def apply(self, frames: np.ndarray, frame_order: str = "bgr") -> np.ndarray:
        """(N, H, W, 3) uint8 frames in `frame_order` -> (N, 3, H, W) float32 network input."""
        x = frames.astype(np.float32)
        if frame_order != self.order:
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class ModelMeta:
    """What a model predicts and how to feed it. Plain data; round-trips through JSON."""

    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB colour per class
    normalization: Normalization = field(default_factory=Normalization)
    arch: str = "deeplabv2"
    input_kind: str = "float"  # float: NCHW normalised; uint8: NHWC raw frames
    input_order: str = "bgr"  # colour order of uint8 input frames
    output_kind: str = "logits"  # logits | probs | labels
    confidence: bool = False  # a second output with the max probability per pixel
    train_size: Size | None = None  # the size the model runs at by default: its training/evaluation size
    interpolation: str = DEFAULT_INTERPOLATION  # how images were resized to train_size in training (bicubic | bilinear)
    precision: str = "fp32"
    mslseg_version: str = ""
    source_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.num_classes < 1:
            problems.append(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            problems.append(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if len(self.palette) != self.num_classes:
            problems.append(f"{len(self.palette)} palette colours for {self.num_classes} classes")
        for name, value, valid in (
            ("input_kind", self.input_kind, INPUT_KINDS),
            ("input_order", self.input_order, CHANNEL_ORDERS),
            ("output_kind", self.output_kind, OUTPUT_KINDS),
            ("precision", self.precision, PRECISIONS),
            ("interpolation", self.interpolation, tuple(INTERPOLATIONS)),
            ("normalization.order", self.normalization.order, CHANNEL_ORDERS),
        ):
            if value not in valid:
                problems.append(f"{name} '{value}' is not one of {', '.join(valid)}")
        if self.train_size is not None and not isinstance(self.train_size, Size):
            problems.append(f"train_size must be a Size(width, height), got {self.train_size!r}")
        if problems:
            raise ModelFormatError("invalid model metadata: " + "; ".join(problems))

    @property
    def label_dtype(self) -> np.dtype:
        return label_dtype(self.num_classes)

    def with_(self, **changes: Any) -> ModelMeta:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["palette"] = [list(c) for c in self.palette]
        d["normalization"]["mean"] = list(self.normalization.mean)
        d["normalization"]["std"] = list(self.normalization.std)
        d["train_size"] = str(self.train_size) if self.train_size else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "metadata") -> ModelMeta:
        if not isinstance(d, dict):
            raise ModelFormatError(f"{source}: metadata is not a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ModelFormatError(
                f"{source}: unknown metadata keys {sorted(unknown)}; "
                "it was written by a newer mslseg: upgrade mslseg"
            )
        try:
            norm = d.get("normalization") or {}
            kwargs = dict(d)
            kwargs["normalization"] = Normalization(
                order=str(norm.get("order", "bgr")),
                mean=tuple(float(v) for v in norm.get("mean", Normalization().mean)),
                std=tuple(float(v) for v in norm.get("std", Normalization().std)),
            )
            kwargs["class_names"] = tuple(str(n) for n in d["class_names"])
            kwargs["palette"] = tuple(tuple(int(v) for v in c) for c in d["palette"])
            kwargs["num_classes"] = int(d["num_classes"])
            kwargs["train_size"] = _train_size(d.get("train_size"))
            return cls(**kwargs)
        except ModelFormatError:
            raise
        except MslsegError as exc:
            raise ModelFormatError(f"{source}: malformed mslseg metadata ({exc})") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"{source}: malformed mslseg metadata ({exc!r})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "metadata") -> ModelMeta:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{source}: metadata is not valid JSON ({exc})") from None
        return cls.from_dict(data, source)


def _train_size(value: Any) -> Size | None:
    """'WxH', as written now; a [height, width] list, as the first release wrote it."""
    if not value:
        return None
    if isinstance(value, list):
        return Size.from_hw(tuple(int(v) for v in value))
    return Size.parse(value, "train_size")


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct, deterministic RGB colours for classes without a palette of their own."""
    rng = np.random.default_rng(12345)
    colours = rng.integers(0, 256, size=(num_classes, 3))
    return tuple(tuple(int(v) for v in c) for c in colours)


@dataclass(frozen=True)
class RunSize:
    """Where a model's frames run: `size` (None: each frame's own), how they are resized, and why."""

    size: Size | None
    interpolation: str
    origin: str  # in words: "as asked", "the model's training size", ...

    def __str__(self) -> str:
        """'128x64 (the model's training size, bicubic)' or 'native (each frame's own size, as asked)'."""
        if self.size is None:
            return f"native ({self.origin})"
        return f"{self.size} ({self.origin}, {self.interpolation})"


def resolve_run_size(requested: Size | str | None, meta: ModelMeta, fixed: Size | None = None,
                     what: str = "the model") -> RunSize:
    """The one rule for the size a model's frames run at (Segmenter, `mslseg evaluate`, export).

    `requested`: None (the model's training size, else each frame's own), "native", or a size
    (see `parse_run_size`); `fixed`: the static input size of a model that has one, which wins
    and refuses any other requested size. Frames are always resized with `meta.interpolation`.
    """
    requested = parse_run_size(requested, "size")
    interp = meta.interpolation
    if fixed is not None:
        if isinstance(requested, Size) and requested != fixed:
            raise InputError(f"{what} has the fixed input size {fixed}; size {requested} cannot apply "
                             "(drop it, or export without --static)")
        return RunSize(fixed, interp, "the model's fixed input size")
    if requested == NATIVE:
        return RunSize(None, interp, "each frame's own size, as asked")
    if isinstance(requested, Size):
        return RunSize(requested, interp, "as asked")
    if meta.train_size is not None:
        return RunSize(meta.train_size, interp, "the model's training size")
    return RunSize(None, interp, "the model records no training size")

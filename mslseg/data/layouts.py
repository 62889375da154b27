"""The datasets' folder layouts as downloaded: which image pairs with which label file.

Each layout function takes a `DataConfig` and returns a `LayoutIndex`: the samples (checked to
exist and pair up, eagerly), how to decode their labels, and the class names. Decoding happens
later, per item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mslseg.data.config import DataConfig
from mslseg.data.files import png_size
from mslseg.data.labels import LabelCodec, cityscapes_codec, class_set, synthia_codec, train_id_codec
from mslseg.runtime.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One image, its label file (None when unlabelled), and its name (path below the image root)."""

    image: Path
    label: Path | None
    name: str


@dataclass(frozen=True)
class LayoutIndex:
    """What a layout function found: the samples, their label decoder, and the class names."""

    samples: tuple[Sample, ...]
    codec: LabelCodec | None  # None when the dataset is read without labels
    class_names: tuple[str, ...]


def require_dir(path: Path, layout: str) -> Path:
    """`path` if it is a folder, else a DataError that shows the expected layout."""
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; expected {layout}: check root (and split)")
    return path


def pair_samples(images: list[Path], image_root: Path, label_for: Callable[[Path], Path] | None,
                 what: str) -> list[Sample]:
    """Samples for sorted `images`, each with the label `label_for` names (checked to exist)."""
    if not images:
        raise DataError(f"no {what} images found under {image_root}; check the root and the split")
    samples = []
    for image in sorted(images):
        label = label_for(image) if label_for else None
        if label is not None and not label.is_file():
            raise DataError(f"image {image} has no label {label}; add it, remove the image, "
                            "or set labelled: false to read images only")
        samples.append(Sample(image, label, image.relative_to(image_root).as_posix()))
    return samples


def check_sizes(samples: list[Sample]) -> None:
    """Compare PNG header sizes of every image/label pair (no decoding)."""
    for s in samples:
        if s.label is None:
            continue
        a, b = png_size(s.image), png_size(s.label)
        if a is not None and b is not None and a != b:
            raise DataError(f"label {s.label} is {b[0]}x{b[1]} but its image {s.image} is {a[0]}x{a[1]}; "
                            "fix the pair or leave it out with a list_file")


def select(samples: list[Sample], cfg: DataConfig) -> tuple[Sample, ...]:
    """Apply the optional list file (in its order) and the limit."""
    if cfg.list_file:
        samples = _from_list(samples, Path(cfg.list_file))
    if cfg.limit is not None:
        samples = samples[: cfg.limit]
    return tuple(samples)


def _from_list(samples: list[Sample], list_file: Path) -> list[Sample]:
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read list file {list_file} ({exc}); check the list_file path") from None
    by_key: dict[str, Sample] = {}
    for s in samples:  # a line may name the relative path, the file name or the stem
        for key in (s.name, Path(s.name).name, Path(s.name).stem):
            by_key.setdefault(key, s)
    names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise DataError(f"list file {list_file} names no samples; write one image name per line")
    missing = [n for n in names if n not in by_key]
    if missing:
        raise DataError(f"list file {list_file} names {len(missing)} image(s) not in the dataset "
                        f"(first: {missing[0]}); check that it belongs to this root and split")
    return [by_key[n] for n in names]


def finish_index(samples: list[Sample], cfg: DataConfig, codec: LabelCodec, classes: tuple[str, ...]
                 ) -> LayoutIndex:
    """Select (list file, limit), check the pairs' sizes, and drop the codec when unlabelled."""
    chosen = select(samples, cfg)
    check_sizes(list(chosen))
    log.info("%s: %d samples under %s", cfg.kind, len(chosen), cfg.root)
    return LayoutIndex(chosen, codec if cfg.labelled else None, classes)


def gta5(cfg: DataConfig) -> LayoutIndex:
    """GTA5: images/NNNNN.png with labels/NNNNN.png (Cityscapes label ids)."""
    root = Path(cfg.root)
    layout = f"{root}/images/NNNNN.png and {root}/labels/NNNNN.png"
    images_dir = require_dir(root / "images", layout)
    labels_dir = require_dir(root / "labels", layout) if cfg.labelled else None
    classes = class_set("gta5", cfg.classes)
    samples = pair_samples(list(images_dir.glob("*.png")), images_dir,
                           (lambda p: labels_dir / p.name) if labels_dir else None, "GTA5")
    return finish_index(samples, cfg, cityscapes_codec(classes), classes)


def cityscapes(cfg: DataConfig) -> LayoutIndex:
    """Cityscapes: leftImg8bit/{split}/{city}/*_leftImg8bit.png, gtFine/.../*_gtFine_labelIds.png."""
    root = Path(cfg.root)
    layout = (f"{root}/leftImg8bit/{cfg.split}/<city>/*_leftImg8bit.png and "
              f"{root}/gtFine/{cfg.split}/<city>/*_gtFine_labelIds.png")
    images_dir = require_dir(root / "leftImg8bit" / cfg.split, layout)
    labels_dir = require_dir(root / "gtFine" / cfg.split, layout) if cfg.labelled else None
    classes = class_set("cityscapes", cfg.classes)

    def label_for(image: Path) -> Path:
        stem = image.name.removesuffix("_leftImg8bit.png")
        return labels_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"

    images = list(images_dir.glob("*/*_leftImg8bit.png"))
    samples = pair_samples(images, images_dir, label_for if labels_dir else None, "Cityscapes")
    return finish_index(samples, cfg, cityscapes_codec(classes), classes)


def synthia(cfg: DataConfig) -> LayoutIndex:
    """SYNTHIA-RAND-CITYSCAPES: RGB/*.png with GT/LABELS/*.png (16-bit, class id in channel 1)."""
    root = Path(cfg.root)
    layout = f"{root}/RGB/*.png and {root}/GT/LABELS/*.png"
    images_dir = require_dir(root / "RGB", layout)
    labels_dir = require_dir(root / "GT" / "LABELS", layout) if cfg.labelled else None
    classes = class_set("synthia", cfg.classes)
    samples = pair_samples(list(images_dir.glob("*.png")), images_dir,
                           (lambda p: labels_dir / p.name) if labels_dir else None, "SYNTHIA")
    return finish_index(samples, cfg, synthia_codec(classes), classes)


def nthu(cfg: DataConfig) -> LayoutIndex:
    """NTHU CrossCity: <City>/Images/{Train,Test}/*.png, labels <City>/Labels/Test/*_eval.png."""
    root = Path(cfg.root)
    if not cfg.city:
        raise ConfigError("nthu needs a city: set city to Rome, Rio, Tokyo or Taipei")
    city = _match_case(root, cfg.city)
    split = {"train": "Train", "test": "Test"}.get(cfg.split.lower())
    if split is None:
        raise ConfigError(f"nthu has the splits Train and Test, not '{cfg.split}'; set split to one of them")
    if split == "Train" and cfg.labelled:
        raise ConfigError("NTHU CrossCity labels only its Test split; set labelled: false for Train")
    layout = f"{root}/{city}/Images/{split}/*.png and {root}/{city}/Labels/Test/*_eval.png"
    images_dir = require_dir(root / city / "Images" / split, layout)
    labels_dir = require_dir(root / city / "Labels" / split, layout) if cfg.labelled else None
    classes = class_set("nthu", cfg.classes)
    samples = pair_samples(list(images_dir.glob("*.png")), images_dir,
                           (lambda p: labels_dir / f"{p.stem}_eval.png") if labels_dir else None, "NTHU")
    return finish_index(samples, cfg, train_id_codec(len(classes)), classes)


def _match_case(root: Path, name: str) -> str:
    """The folder of `root` named `name` in any letter case (Rome, rome)."""
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and child.name.lower() == name.lower():
                return child.name
    return name

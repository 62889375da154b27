"""A generic folder dataset for a user's own or simulator data.

    root/images/<any/sub/path>/<stem>.png|jpg|...   (any image suffix of runtime/io/media.py)
    root/labels/<any/sub/path>/<stem>.png|tif|bmp   (optional; same relative path and stem; lossless)

Label values are train ids (0..classes-1, 255 ignore) unless a mapping file (`label_map`, YAML or
JSON) says otherwise::

    classes: [road, car, sky]   # optional: class names in train-id order
    mapping:                    # label value -> train id (255: ignore); other values are errors
      7: 0
      26: 1
      23: 2
      0: 255

A bare ``{value: train id}`` mapping is accepted too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mslseg.classes import IGNORE_INDEX, default_class_names
from mslseg.data.config import DataConfig
from mslseg.data.labels import LabelCodec, mapping_codec, train_id_codec
from mslseg.data.layouts import LayoutIndex, finish_index, pair_samples, require_dir
from mslseg.runtime.errors import ConfigError
from mslseg.runtime.io.media import LABEL_SUFFIXES, is_image


def folder(cfg: DataConfig) -> LayoutIndex:
    """images/ with optional labels/ of the same relative path and stem."""
    root = Path(cfg.root)
    layout = f"{root}/images/<name>.png|jpg with {root}/labels/<name>.png"
    images_dir = require_dir(root / "images", layout)
    labels_dir = require_dir(root / "labels", layout) if cfg.labelled else None
    codec, classes = _codec(cfg)
    images = [p for p in images_dir.rglob("*") if is_image(p) and p.is_file()]

    def label_for(image: Path) -> Path:
        base = labels_dir / image.relative_to(images_dir).with_suffix("")
        for suffix in LABEL_SUFFIXES:
            candidate = base.with_name(base.name + suffix)
            if candidate.is_file():
                return candidate
        return base.with_name(base.name + ".png")  # missing: pair_samples reports this path

    samples = pair_samples(images, images_dir, label_for if labels_dir else None, "folder")
    return finish_index(samples, cfg, codec, classes)


def _codec(cfg: DataConfig) -> tuple[LabelCodec, tuple[str, ...]]:
    if not cfg.label_map:
        classes = default_class_names(cfg.classes)
        return train_id_codec(len(classes), f"the train ids 0..{len(classes) - 1} and {IGNORE_INDEX} "
                              "(give a label_map file to map other values)"), classes
    path = Path(cfg.label_map)
    mapping, names = read_label_map(path)
    classes = names or default_class_names(cfg.classes)
    return mapping_codec(mapping, len(classes), f"the values of label map {path}"), classes


def read_label_map(path: Path) -> tuple[dict[int, int], tuple[str, ...] | None]:
    """({label value: train id}, class names or None) from a YAML or JSON mapping file."""
    try:
        text = path.read_text()
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"cannot read label map {path} ({exc.strerror}); check label_map") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"label map {path} is not valid YAML/JSON ({exc}); fix its syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"label map {path} must be a mapping of label values to train ids")
    names = None
    if "mapping" in data:
        unknown = set(data) - {"mapping", "classes"}
        if unknown:
            raise ConfigError(f"label map {path} has unknown keys {sorted(unknown)}; use classes and mapping")
        names, data = data.get("classes"), data["mapping"]
        if names is not None and not (isinstance(names, list) and names):
            raise ConfigError(f"label map {path}: classes must be a non-empty list of names")
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"label map {path}: the mapping must be a non-empty {{value: train id}} table")
    try:
        mapping = {int(k): int(v) for k, v in data.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"label map {path}: keys and values must be integers (label value: train id)"
                          ) from None
    return mapping, tuple(str(n) for n in names) if names else None

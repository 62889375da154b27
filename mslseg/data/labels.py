"""Label files to train ids: the id tables of each dataset, and a checked decoder.

A `LabelCodec` is a lookup table over every possible label value (16 bits) plus a mask of the
values that may appear. A value outside that mask is an error naming the file, never a silent
ignore: it means the labels are not the kind the dataset was told they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mslseg.classes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN,
    IGNORE_INDEX,
    SYNTHIA13_CLASSES,
    SYNTHIA16_CLASSES,
)
from mslseg.runtime.errors import ConfigError, DataError

# SYNTHIA class id (first channel of GT/LABELS) -> train id in SYNTHIA16_CLASSES order.
SYNTHIA_ID_TO_TRAIN16 = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13,
    12: 14, 11: 15,
}  # fmt: skip
CITYSCAPES_MAX_ID = 33  # label ids 0..33 exist (the licence plate's -1 never reaches a PNG)
SYNTHIA_MAX_ID = 22  # SYNTHIA's classes are 0 (void) .. 22 (lane marking)
CLASS_SETS = {19: CITYSCAPES_CLASSES, 16: SYNTHIA16_CLASSES, 13: SYNTHIA13_CLASSES}
_VALUES = 1 << 16


@dataclass(frozen=True, eq=False)
class LabelCodec:
    """Turns the values of a label file into train ids (IGNORE_INDEX = ignore)."""

    lut: np.ndarray  # (65536,) uint8: label value -> train id
    allowed: np.ndarray  # (65536,) bool: values that may appear in a label file
    channel: int | None  # which array channel holds the id in a multi-channel file (None: single)
    expected: str  # what the values should be, for error messages

    def decode(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """(H, W) or (H, W, C) label values -> (H, W) uint8 train ids; DataError on a bad value."""
        values = _select_channel(raw, self.channel, path)
        bad = ~self.allowed[values]
        if bad.any():
            found = np.unique(values[bad])
            shown = ", ".join(str(int(v)) for v in found[:5])
            raise DataError(
                f"label {path} holds value(s) {shown} outside {self.expected}; "
                "check that the dataset kind (or the label_map file) matches these labels"
            )
        return self.lut[values]


def class_set(kind: str, classes: int) -> tuple[str, ...]:
    """The class names a layout yields for the configured class count."""
    valid = {"gta5": (19, 16, 13), "cityscapes": (19, 16, 13), "synthia": (16, 13), "nthu": (13,)}
    if classes not in valid[kind]:
        allowed = " or ".join(str(c) for c in valid[kind])
        raise ConfigError(f"{kind} has no {classes}-class setting; set classes to {allowed}")
    return CLASS_SETS[classes]


def _reindex(id_to_train: dict[int, int], from_names: tuple[str, ...], to_names: tuple[str, ...]
             ) -> dict[int, int]:
    """Compose label id -> train id in `from_names` with the renumbering to `to_names`."""
    return {i: to_names.index(from_names[t]) for i, t in id_to_train.items() if from_names[t] in to_names}


def table_codec(id_to_train: dict[int, int], max_id: int, expected: str, channel: int | None = None
                ) -> LabelCodec:
    """A codec for ids 0..max_id where ids outside `id_to_train` are ignored."""
    lut = np.full(_VALUES, IGNORE_INDEX, np.uint8)
    for label_id, train_id in id_to_train.items():
        lut[label_id] = train_id
    allowed = np.zeros(_VALUES, bool)
    allowed[: max_id + 1] = True
    return LabelCodec(lut, allowed, channel, expected)


def cityscapes_codec(classes: tuple[str, ...]) -> LabelCodec:
    """Cityscapes label ids (gtFine *_labelIds.png, and GTA5's labels) -> train ids of `classes`."""
    table = _reindex(CITYSCAPES_ID_TO_TRAIN, CITYSCAPES_CLASSES, classes)
    return table_codec(table, CITYSCAPES_MAX_ID, f"the Cityscapes label ids 0..{CITYSCAPES_MAX_ID}")


def synthia_codec(classes: tuple[str, ...]) -> LabelCodec:
    """SYNTHIA class ids (first channel of the 16-bit GT/LABELS PNG) -> train ids of `classes`."""
    table = _reindex(SYNTHIA_ID_TO_TRAIN16, SYNTHIA16_CLASSES, classes)
    # OpenCV returns channels in BGR order: the file's first channel is array channel 2.
    return table_codec(table, SYNTHIA_MAX_ID, f"the SYNTHIA class ids 0..{SYNTHIA_MAX_ID}", channel=2)


def train_id_codec(num_classes: int, expected: str | None = None) -> LabelCodec:
    """Labels that already hold train ids 0..num_classes-1, and IGNORE_INDEX."""
    mapping = {i: i for i in range(num_classes)}
    return mapping_codec(mapping, num_classes,
                         expected or f"the train ids 0..{num_classes - 1} and {IGNORE_INDEX} (ignore)")


def mapping_codec(mapping: dict[int, int], num_classes: int, expected: str) -> LabelCodec:
    """Exactly the values in `mapping` may appear (plus IGNORE_INDEX, which is ignored)."""
    if not 1 <= num_classes < IGNORE_INDEX:
        raise ConfigError(f"{num_classes} classes do not fit the train ids 0..{IGNORE_INDEX - 1}; "
                          "use fewer classes")
    lut = np.full(_VALUES, IGNORE_INDEX, np.uint8)
    allowed = np.zeros(_VALUES, bool)
    allowed[IGNORE_INDEX] = True
    for value, train_id in mapping.items():
        if not (0 <= value < _VALUES):
            raise ConfigError(f"label value {value} is outside 0..{_VALUES - 1}; fix the label mapping")
        if train_id != IGNORE_INDEX and not (0 <= train_id < num_classes):
            raise ConfigError(f"label value {value} maps to train id {train_id}, outside "
                              f"0..{num_classes - 1} and {IGNORE_INDEX}; fix the label mapping")
        lut[value], allowed[value] = train_id, True
    return LabelCodec(lut, allowed, None, expected)


def _select_channel(raw: np.ndarray, channel: int | None, path: Path) -> np.ndarray:
    if raw.ndim == 2:
        return raw
    if raw.ndim == 3 and raw.shape[2] == 1:
        return raw[..., 0]
    if raw.ndim == 3 and channel is not None and channel < raw.shape[2]:
        return raw[..., channel]
    if raw.ndim == 3 and all(np.array_equal(raw[..., 0], raw[..., c]) for c in range(1, raw.shape[2])):
        return raw[..., 0]  # a grey label saved with three equal channels
    raise DataError(f"label {path} is a colour image; labels must be single-channel id maps "
                    "(for Cityscapes the *_gtFine_labelIds.png files, not *_color.png)")

"""Class sets of the benchmarks: names, palettes, and the label-id tables of each dataset."""

from __future__ import annotations

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

IGNORE_INDEX = 255

# Cityscapes label id -> train id (GTA5 labels use the same ids); every other id is ignored.
CITYSCAPES_ID_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

# The 16 Cityscapes classes SYNTHIA annotates (no terrain, truck, train), in train-id order.
SYNTHIA16_CLASSES = tuple(c for c in CITYSCAPES_CLASSES if c not in ("terrain", "truck", "train"))
# mIoU* of the SYNTHIA benchmark: the 13 of those, without wall, fence and pole.
SYNTHIA13_CLASSES = tuple(c for c in SYNTHIA16_CLASSES if c not in ("wall", "fence", "pole"))


def palette_for(names: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    """Cityscapes colours for Cityscapes class names, generated colours for the rest."""
    from mslseg.runtime.metadata import default_palette

    fallback = default_palette(len(names))
    lookup = dict(zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, strict=True))
    return tuple(lookup.get(n, fallback[i]) for i, n in enumerate(names))


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """Cityscapes names for the usual class counts (19, 16, 13), generic names otherwise."""
    by_count = {19: CITYSCAPES_CLASSES, 16: SYNTHIA16_CLASSES, 13: SYNTHIA13_CLASSES}
    return by_count.get(num_classes, tuple(f"class_{i}" for i in range(num_classes)))

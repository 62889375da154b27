"""Colour maps, overlays and legends, from the palette in the model metadata (RGB per class).

Label values past the palette (an ignore label such as 255) are drawn black.

`overlay(..., names=..., outline=True)` is what `mslseg infer` writes and shows: the colours
blended over the frame, a thin dark line along every boundary between two classes (so a class
stays visible where its colour matches the scene, such as the Cityscapes grey of "building" on
grey facades), and a legend strip of the classes in the frame appended *below* it, so no scene
pixel is hidden and row y of the picture is row y of the frame. The strip's height depends only
on the frame's size and the number of classes, so every frame of a video gets the same size.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import numpy as np

from mslseg.runtime.errors import InputError
from mslseg.runtime.metadata import ModelMeta

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX (no cv2 import at module level)
_STRIP_BG = (24, 24, 24)  # near black: reads in both colour orders and next to any scene
_TEXT = (255, 255, 255)


def palette_lut(meta_or_palette: ModelMeta | tuple[tuple[int, int, int], ...],
                order: str = "bgr") -> np.ndarray:
    """A (65536, 3) uint8 lookup table: label value -> colour in `order` ("bgr" or "rgb")."""
    palette = meta_or_palette.palette if isinstance(meta_or_palette, ModelMeta) else meta_or_palette
    if order not in ("bgr", "rgb"):
        raise InputError(f"colour order must be 'bgr' or 'rgb', got '{order}'")
    lut = np.zeros((65536, 3), np.uint8)
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)
    lut[: len(colours)] = colours[:, ::-1] if order == "bgr" else colours
    return lut


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(H, W) uint8/uint16 labels -> (H, W, 3) uint8 colours (see `palette_lut`)."""
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        raise InputError(f"labels must be an (H, W) uint8 or uint16 map, got {labels.shape} {labels.dtype}")
    return np.take(lut, labels, axis=0)  # 2-3x faster than lut[labels]


def boundaries(labels: np.ndarray, thickness: int = 1) -> np.ndarray:
    """(H, W) uint8, 255 where a pixel's label differs from the one left of or above it (1 px lines)."""
    import cv2

    edge = np.zeros(labels.shape, np.uint8)
    edge[:, 1:] = cv2.compare(labels[:, 1:], labels[:, :-1], cv2.CMP_NE)
    cv2.bitwise_or(edge[1:], cv2.compare(labels[1:], labels[:-1], cv2.CMP_NE), dst=edge[1:])
    if thickness > 1:
        edge = cv2.dilate(edge, np.ones((thickness, thickness), np.uint8))
    return edge


def class_pixels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) int64: how many pixels of `labels` hold each class (other values ignored)."""
    import cv2

    if labels.dtype == np.uint8:  # a histogram is ~3x faster than bincount's cast to intp
        counts = cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    else:
        counts = np.bincount(labels.ravel(), minlength=num_classes)
    return np.pad(counts, (0, max(0, num_classes - len(counts))))[:num_classes]


def overlay(frame: np.ndarray, labels: np.ndarray, lut: np.ndarray, alpha: float = 0.5, *,
            names: Sequence[str] | None = None, outline: bool = False) -> np.ndarray:
    """Blend the colour map over `frame` (HxWx3 uint8, in the lut's colour order); alpha = label weight.

    outline: draw a thin black line between regions of different labels (2 px from 1600 px wide).
    names: the class names; when given, a legend of the classes in the frame (colour and name,
        the largest first where not all fit) is appended below the frame: the picture is then
        taller than the frame by `legend_height(len(names), W, H)` rows.
    """
    import cv2

    if frame.shape[:2] != labels.shape:
        raise InputError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in 0..1, got {alpha}")
    picture = cv2.addWeighted(colorize(labels, lut), alpha, frame, 1.0 - alpha, 0.0)
    if outline:  # black: subtracting 255 under the mask is ~6x faster than a boolean assignment
        cv2.subtract(picture, (255, 255, 255, 0), dst=picture, mask=boundaries(labels, 1 + labels.shape[1] // 1600))
    if names is None:
        return picture
    h, w = labels.shape
    counts = class_pixels(labels, len(names))
    present = np.flatnonzero(counts)
    by_area = present[np.argsort(-counts[present], kind="stable")]
    strip = legend_strip(by_area.tolist(), names, lut, w, rows=_legend_rows(tuple(names), w, h))
    return np.vstack([picture, strip])


def legend_height(num_classes: int | Sequence[str], width: int, frame_height: int) -> int:
    """Rows of pixels `overlay(..., names=...)` appends below a frame of `width` x `frame_height`."""
    names = tuple(f"class_{i}" for i in range(num_classes)) if isinstance(num_classes, int) else num_classes
    return _legend_rows(tuple(names), width, frame_height) * _metrics(width)[1]


def _metrics(width: int) -> tuple[float, int]:
    """(font scale, row height) of a legend `width` pixels wide: never under 0.4 (~8 px letters)."""
    scale = min(max(width / 1600, 0.4), 0.8)
    return scale, int(round(27 * scale)) + 3


def _columns(names: Sequence[str], width: int) -> int:
    """How many equal columns `width` holds, each wide enough for the widest entry (at least 1)."""
    import cv2

    scale, row_h = _metrics(width)
    swatch, pad = row_h - 4, max(3, row_h // 3)
    texts = [*names, f"+{len(names)} more"]
    widest = max(cv2.getTextSize(t, _FONT, scale, 1)[0][0] for t in texts)
    return max(1, (width - pad) // (swatch + pad // 2 + widest + pad))


def _layout(names: Sequence[str], classes: Sequence[int], width: int) -> list[tuple[int, int, int]]:
    """(class, x, row) of each entry, row by row in a grid spread over the whole `width`.

    As many equal columns as there are entries, up to as many as fit; then as few as the rows
    this takes need, so the last row is as full as it can be (19 classes in 4 rows: 5, 5, 5, 4,
    not 6, 6, 6, 1).
    """
    n = len(classes)
    if not n:
        return []
    rows = -(-n // min(n, _columns(names, width)))
    cols = -(-n // rows)
    pad = max(3, _metrics(width)[1] // 3)
    step = (width - pad) / cols
    return [(c, pad + int(i % cols * step), i // cols) for i, c in enumerate(classes)]


@functools.lru_cache(maxsize=32)  # once per video, not once per frame
def _legend_rows(names: tuple[str, ...], width: int, frame_height: int) -> int:
    """Rows for every class of the model; at most the frame's height (but 3 rows where that is less)."""
    needed = -(-len(names) // _columns(names, width)) if names else 1
    return min(needed, max(3, frame_height // _metrics(width)[1]))


def legend_strip(classes: Iterable[int], names: Sequence[str], lut: np.ndarray, width: int, *,
                 rows: int | None = None) -> np.ndarray:
    """A (rows x row height, width, 3) uint8 strip: a colour swatch and the name of each class.

    `classes` in priority order; they are drawn in class order, in a grid that spreads them over
    the whole width. With `rows`, the strip has exactly that many rows; classes that do not fit
    are dropped from the end of `classes` and counted in a final "+N more". Colours come from
    `lut`, so the strip is in the lut's colour order.
    """
    import cv2

    if rows is not None and rows < 1:
        raise InputError(f"a legend needs rows >= 1, got {rows}")
    classes = [int(c) for c in classes if 0 <= int(c) < len(names)]
    scale, row_h = _metrics(width)
    capacity = len(classes) if rows is None else rows * _columns(names, width)
    kept = sorted(classes if len(classes) <= capacity else classes[:capacity - 1])  # the highest priority
    entries = kept if len(kept) == len(classes) else [*kept, len(names)]  # len(names): "+N more"
    layout = _layout(names, entries, width)
    n_rows = rows if rows is not None else (layout[-1][2] + 1 if layout else 1)
    strip = np.full((n_rows * row_h, width, 3), _STRIP_BG, np.uint8)
    swatch = row_h - 4
    for c, x, r in layout:
        y = r * row_h + 2
        if c < len(names):
            cv2.rectangle(strip, (x, y), (x + swatch - 1, y + swatch - 1), (200, 200, 200), 1)
            strip[y + 1: y + swatch - 1, x + 1: x + swatch - 1] = lut[c]
            text = names[c]
        else:
            text = f"+{len(classes) - len(kept)} more"
        cv2.putText(strip, text, (x + swatch + max(2, row_h // 6), y + swatch - max(1, row_h // 10)),
                    _FONT, scale, _TEXT, 1, cv2.LINE_AA)
    return strip


def legend(meta: ModelMeta, order: str = "bgr", row_height: int = 20, width: int = 220) -> np.ndarray:
    """An image listing every class name beside its colour, one per row (for a window or a figure)."""
    import cv2

    lut = palette_lut(meta, order)
    img = np.full((row_height * meta.num_classes, width, 3), 255, np.uint8)
    for i, name in enumerate(meta.class_names):
        y = i * row_height
        img[y + 2: y + row_height - 2, 4: row_height + 4] = lut[i]
        cv2.putText(img, name, (row_height + 10, y + row_height - 6), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img

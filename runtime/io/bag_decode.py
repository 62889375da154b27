"""A ROS camera message's pixels as the BGR uint8 frame the rest of mslseg takes.

Raw `sensor_msgs/Image` encodings are unpacked with numpy (row padding in `step` skipped,
`is_bigendian` honoured for 16 bit) and converted with OpenCV; `sensor_msgs/CompressedImage`
jpeg/png go through `cv2.imdecode`. 16-bit mono (mono16, 16UC1: thermal, HDR or 10/12-bit sensors,
depth in mm) is scaled by each frame's own maximum, not shifted right by 8: a 12-bit sensor's values
(< 4096) would otherwise come out nearly black, so brightness follows the frame, not an absolute scale.
"""

from __future__ import annotations

import numpy as np

from mslseg.runtime.errors import DataError

# encoding -> (channels, bytes per channel, OpenCV conversion to BGR or None when already BGR).
# ROS bayer names give the 2x2 pattern from the top-left; OpenCV names it from the second row and
# column, so bayer_rggb8 is COLOR_BayerBG2BGR (as cv_bridge maps it).
_RAW: dict[str, tuple[int, int, str | None]] = {
    "bgr8": (3, 1, None),
    "8UC3": (3, 1, None),
    "rgb8": (3, 1, "COLOR_RGB2BGR"),
    "bgra8": (4, 1, "COLOR_BGRA2BGR"),
    "rgba8": (4, 1, "COLOR_RGBA2BGR"),
    "mono8": (1, 1, "COLOR_GRAY2BGR"),
    "8UC1": (1, 1, "COLOR_GRAY2BGR"),
    "bayer_rggb8": (1, 1, "COLOR_BayerBG2BGR"),
    "bayer_bggr8": (1, 1, "COLOR_BayerRG2BGR"),
    "bayer_gbrg8": (1, 1, "COLOR_BayerGR2BGR"),
    "bayer_grbg8": (1, 1, "COLOR_BayerGB2BGR"),
    "mono16": (1, 2, "COLOR_GRAY2BGR"),
    "16UC1": (1, 2, "COLOR_GRAY2BGR"),
}
RAW_ENCODINGS: tuple[str, ...] = tuple(_RAW)
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")
SUPPORTED: tuple[str, ...] = RAW_ENCODINGS + tuple(f"{f} (compressed)" for f in COMPRESSED_FORMATS)


def compressed_format(text: str) -> str:
    """'bgr8; jpeg compressed bgr8' -> 'jpeg'; 'png' -> 'png'; anything else as given."""
    lowered = text.lower()
    if "compresseddepth" in lowered:  # a 12-byte depth header precedes the png: not an image file
        return text
    for name, words in (("jpeg", ("jpeg", "jpg")), ("png", ("png",))):
        if any(w in lowered for w in words):
            return name
    return text


def _unsupported(topic: str, encoding: str) -> DataError:
    return DataError(f"topic {topic or '?'} has encoding {encoding or '(empty)'}, which mslseg cannot show as a "
                     f"camera image; supported: {', '.join(SUPPORTED)}")


def check_encoding(encoding: str, compressed: bool, topic: str = "") -> None:
    """DataError unless frames of this encoding (raw) or format (compressed) can be decoded."""
    known = compressed_format(encoding) in COMPRESSED_FORMATS if compressed else encoding in _RAW
    if not known:
        raise _unsupported(topic, encoding)


def decode_image(data: bytes | np.ndarray, encoding: str, *, height: int = 0, width: int = 0, step: int = 0,
                 is_bigendian: bool = False, compressed: bool = False, topic: str = "") -> np.ndarray:
    """The (H, W, 3) uint8 BGR frame of a message's fields (`encoding` is a CompressedImage's format).

    Always a new, writable array (never a view into the bag's buffer). DataError for an encoding
    mslseg cannot decode, or for data that does not hold the image its fields describe.
    """
    import cv2

    check_encoding(encoding, compressed, topic)
    buffer = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if compressed:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"a message on {topic or '?'} is not a decodable {compressed_format(encoding)} image")
        return image
    channels, depth, conversion = _RAW[encoding]
    row = width * channels * depth
    step = step or row
    if height <= 0 or width <= 0 or step < row or buffer.size < step * (height - 1) + row:
        raise DataError(f"a message on {topic or '?'} holds {buffer.size} bytes, too few for a {width}x{height} "
                        f"{encoding} image with rows of {step} bytes; the message is damaged")
    if buffer.size < step * height:  # the last row's padding may be left out
        buffer = np.concatenate([buffer, np.zeros(step * height - buffer.size, np.uint8)])
    rows = buffer[: step * height].reshape(height, step)[:, :row]
    if depth == 2:
        order = ">u2" if is_bigendian else "<u2"  # then native: OpenCV takes no byte order but the machine's
        image16 = np.ascontiguousarray(rows).view(order).reshape(height, width).astype(np.uint16)
        peak = int(image16.max())
        gray = cv2.convertScaleAbs(image16, alpha=255.0 / peak) if peak else np.zeros((height, width), np.uint8)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows
    if conversion is None:
        return pixels.copy()  # owned: a view would pin the whole chunk and be read-only
    return cv2.cvtColor(np.ascontiguousarray(pixels), getattr(cv2, conversion))

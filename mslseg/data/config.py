"""What names a dataset: the piece of the run config that `build_dataset` takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mslseg.runtime.errors import ConfigError, MslsegError
from mslseg.runtime.sizes import EXAMPLE, Size

DATASET_KINDS = ("gta5", "cityscapes", "synthia", "nthu", "folder", "video", "bag")


@dataclass(frozen=True)
class DataConfig:
    kind: str = "gta5"  # gta5 | cityscapes | synthia | nthu | folder | video | bag
    root: str = ""  # dataset root as downloaded (video / bag: a file, a folder of them or a glob; a rosbag2 folder)
    topic: str | None = None  # bag: the image topic to read (sensor_msgs/Image or CompressedImage)
    split: str = "train"  # cityscapes: train/val/test; nthu: Train/Test; others: ignored
    list_file: str | None = None  # optional file of names, one per line, selecting a subset
    city: str | None = None  # nthu: Rome | Rio | Tokyo | Taipei
    classes: int = 19  # class set: 19 (Cityscapes), 16 or 13 (SYNTHIA), 13 (NTHU)
    label_map: str | None = None  # folder datasets: YAML/JSON file mapping label values to train ids
    labelled: bool = True  # read labels (False: images only, e.g. an unlabelled target split)
    size: Size | None = None  # resize to this size before cropping; None: keep
    crop: Size | None = None  # random crop of this size when training; None: none
    flip: bool = False  # random horizontal flip when training
    blur: bool = False  # random Gaussian blur when training
    interpolation: str = "bicubic"  # image resize: bicubic (the reference) | bilinear; labels: nearest
    # with size: resize the labels too, scoring at `size` (the MaxSquareLoss reference); false: labels
    # keep their own resolution and predictions are resized to them (ADVENT, `mslseg evaluate`)
    resize_labels: bool = True
    # video and bag: every k-th frame; None (auto): every 30th (1 a second at 30 fps), but at least 100
    # frames of each file (all of a clip under 100 frames) ...
    video_stride: int | None = None
    video_frames: int | None = None  # ... or N frames spread evenly over each file (overrides the stride)
    limit: int | None = None  # use only the first N samples (quick runs, tests)

    def __post_init__(self) -> None:
        # code written before sizes were `Size` passes (width, height) pairs: read them as such
        for name in ("size", "crop"):
            object.__setattr__(self, name, as_size(getattr(self, name), name))


def as_size(value: Any, where: str) -> Size | None:
    """A data size as config and code give it: Size, 'WxH', 'W,H', or [width, height] (YAML, old run dirs)."""
    if value is None or isinstance(value, Size):
        return value
    if isinstance(value, str) and "," not in value:
        return Size.parse(value, where)  # the one parser, and its message
    if isinstance(value, str):
        value = value.split(",")
    try:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            if any(isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()) for v in value):
                raise ValueError(value)
            return Size(*(int(v) for v in value))
    except (MslsegError, TypeError, ValueError):
        pass
    raise ConfigError(f"{where} must be WIDTHxHEIGHT with both >= 1 (for example {EXAMPLE}), got {value!r}")

"""What names a dataset: the piece of the run config that `build_dataset` takes."""

from __future__ import annotations

from dataclasses import dataclass

DATASET_KINDS = ("gta5", "cityscapes", "synthia", "nthu", "folder", "video")


@dataclass(frozen=True)
class DataConfig:
    kind: str = "gta5"  # gta5 | cityscapes | synthia | nthu | folder | video
    root: str = ""  # dataset root as downloaded (for video: a file, a folder of videos or a glob)
    split: str = "train"  # cityscapes: train/val/test; nthu: Train/Test; others: ignored
    list_file: str | None = None  # optional file of names, one per line, selecting a subset
    city: str | None = None  # nthu: Rome | Rio | Tokyo | Taipei
    classes: int = 19  # class set: 19 (Cityscapes), 16 or 13 (SYNTHIA), 13 (NTHU)
    label_map: str | None = None  # folder datasets: YAML/JSON file mapping label values to train ids
    labelled: bool = True  # read labels (False: images only, e.g. an unlabelled target split)
    size: tuple[int, int] | None = None  # resize to (width, height) before cropping; None: keep
    crop: tuple[int, int] | None = None  # random crop (width, height) when training; None: none
    flip: bool = False  # random horizontal flip when training
    blur: bool = False  # random Gaussian blur when training
    interpolation: str = "bicubic"  # image resize: bicubic (the reference) | bilinear; labels: nearest
    # with size: resize the labels too, scoring at `size` (the MaxSquareLoss reference); false: labels
    # keep their own resolution and predictions are resized to them (ADVENT, `mslseg evaluate`)
    resize_labels: bool = True
    # video: every k-th frame; None (auto): every 30th (1 a second at 30 fps), but at least 100
    # frames of each file (all of a clip under 100 frames) ...
    video_stride: int | None = None
    video_frames: int | None = None  # ... or N frames spread evenly over each file (overrides the stride)
    limit: int | None = None  # use only the first N samples (quick runs, tests)

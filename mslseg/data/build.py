"""`build_dataset`: a `DataConfig` to the torch Dataset the training and evaluation loops read."""

from __future__ import annotations

from collections.abc import Callable

from mslseg.classes import default_class_names
from mslseg.data import folder, layouts
from mslseg.data.bag_frames import BagFrames, find_bags
from mslseg.data.config import DATASET_KINDS, DataConfig
from mslseg.data.datasets import ImageFiles, SegmentationDataset
from mslseg.data.transforms import Augment
from mslseg.data.video_frames import VideoFrames, find_videos
from mslseg.runtime.errors import ConfigError
from mslseg.runtime.metadata import Normalization

LAYOUTS: dict[str, Callable[[DataConfig], layouts.LayoutIndex]] = {
    "gta5": layouts.gta5,
    "cityscapes": layouts.cityscapes,
    "synthia": layouts.synthia,
    "nthu": layouts.nthu,
    "folder": folder.folder,
}


def build_dataset(cfg: DataConfig, normalization: Normalization, *, train: bool, seed: int = 0
                  ) -> SegmentationDataset:
    """The dataset `cfg` describes, checked eagerly (layout, pairing, emptiness, PNG sizes).

    `train` turns on the random crop, flip and blur `cfg` asks for; `seed` is mixed into their
    RNG (see `mslseg.data.datasets`). Video and bag sources are always unlabelled.
    """
    if cfg.kind not in DATASET_KINDS:
        raise ConfigError(f"dataset kind '{cfg.kind}' is not one of {', '.join(DATASET_KINDS)}")
    if not cfg.root:
        raise ConfigError(f"the {cfg.kind} dataset has no root; set root to the folder as downloaded")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"limit must be >= 1 (or unset), got {cfg.limit}")
    augment = Augment(size=cfg.size, crop=cfg.crop, flip=cfg.flip, blur=cfg.blur,
                      interpolation=cfg.interpolation, resize_labels=cfg.resize_labels)
    if cfg.kind == "video":
        frames = VideoFrames(find_videos(cfg.root), cfg.video_stride, cfg.video_frames, cfg.limit)
        names = default_class_names(cfg.classes)
    elif cfg.kind == "bag":
        frames = BagFrames(find_bags(cfg.root), cfg.topic, cfg.video_stride, cfg.video_frames, cfg.limit)
        names = default_class_names(cfg.classes)
    else:
        index = LAYOUTS[cfg.kind](cfg)
        frames, names = ImageFiles(index.samples, index.codec), index.class_names
    return SegmentationDataset(frames, names, normalization, augment, train=train, seed=seed, root=cfg.root)

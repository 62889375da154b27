"""What a media file is, told by its name: the one list of image, video, bag and label suffixes.

Every place that sorts files into images, videos and robot bags asks here: `mslseg infer` sources,
the training datasets, int8 calibration and the train CLI's guess of a target's kind. A new kind of
file is one more entry in `MEDIA_KINDS`; the error messages list suffixes from it. A rosbag2 bag
is a folder (metadata.yaml beside its .db3/.mcap files): the one kind told by a look inside.
Also here: which glob to suggest for a folder whose images lie in sub-folders. Dependency-free
(no OpenCV), so the CLI can ask before anything heavy is imported.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path

# kind -> suffixes (lower case), the ones OpenCV's imread / FFmpeg read
MEDIA_KINDS: dict[str, tuple[str, ...]] = {
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"),
    "video": (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"),
    # robot recordings: MCAP (ROS 1 or 2), ROS 1 bags, a rosbag2 sqlite3 file (read by runtime/io/bags.py)
    "bag": (".mcap", ".bag", ".db3"),
}
IMAGE_SUFFIXES = MEDIA_KINDS["image"]
VIDEO_SUFFIXES = MEDIA_KINDS["video"]
BAG_SUFFIXES = MEDIA_KINDS["bag"]
ROSBAG2_METADATA = "metadata.yaml"  # what makes a folder a rosbag2 bag
# label maps must decode to exactly the stored values: lossless formats only (no JPEG, no WebP)
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
# folder names that hold the camera images, not the label maps, in the dataset layouts mslseg reads
# (Cityscapes leftImg8bit/, GTA5 and folder images/, NTHU <City>/Images/, SYNTHIA RGB/)
IMAGE_FOLDERS = frozenset({"leftImg8bit", "images", "Images", "RGB"})

_KIND_BY_SUFFIX = {suffix: kind for kind, suffixes in MEDIA_KINDS.items() for suffix in suffixes}


def kind_of(path: str | os.PathLike[str]) -> str | None:
    """The kind of file `path` names ("image", "video", "bag": a key of MEDIA_KINDS) by its suffix in
    any letter case, or None; a local folder holding metadata.yaml is a (rosbag2) "bag". A URL's query
    and fragment are ignored (`https://host/clip.mp4?sig=...`)."""
    text = os.fspath(path)
    if "://" in text:
        return _KIND_BY_SUFFIX.get(Path(text.split("?")[0].split("#")[0]).suffix.lower())
    kind = _KIND_BY_SUFFIX.get(Path(text).suffix.lower())
    if kind is None and is_rosbag2_folder(text):
        return "bag"
    return kind


def is_rosbag2_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder holding a rosbag2 bag's metadata.yaml."""
    return os.path.isfile(os.path.join(path, ROSBAG2_METADATA))


def is_image(path: str | os.PathLike[str]) -> bool:
    return kind_of(path) == "image"


def is_video(path: str | os.PathLike[str]) -> bool:
    return kind_of(path) == "video"


def is_bag(path: str | os.PathLike[str]) -> bool:
    """An .mcap, .bag or .db3 file (by name) or a rosbag2 folder."""
    return kind_of(path) == "bag"


def is_label(path: str | os.PathLike[str]) -> bool:
    """Whether `path` may hold a label map (a lossless image format)."""
    return Path(path).suffix.lower() in LABEL_SUFFIXES


def suffix_list(*kinds: str) -> str:
    """The suffixes of `kinds` (default: all) for a message: "images: .png .jpg ...; videos: .mp4 ..."
    (bags: "... .db3 or a rosbag2 folder")."""
    return "; ".join(f"{kind}s: {' '.join(MEDIA_KINDS[kind])}" + (" or a rosbag2 folder" if kind == "bag" else "")
                     for kind in kinds or MEDIA_KINDS)


def suggest_glob(folder: Path) -> tuple[str, int, str] | None:
    """(pattern, files it matches, their kind) for a folder whose media lie in sub-folders at any depth, or None.

    The pattern is the one a user can quote to SOURCE (`**` reaches every depth): images before
    videos, the most frequent suffix, and, below a dataset root, only its image folders, so that
    label maps beside them are not taken for camera frames (`root/leftImg8bit/**/*.png`).
    """
    found: Counter[tuple[str, Path, str]] = Counter()  # (kind, image folder or ".", suffix) -> files
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # as glob skips them
        parts = Path(dirpath).relative_to(folder).parts
        for name in filenames:
            kind = _KIND_BY_SUFFIX.get(Path(name).suffix.lower())  # by name: these are files
            if kind is not None and not name.startswith("."):
                found[kind, _image_folder(parts) if kind == "image" else Path(), Path(name).suffix] += 1
    if not found:
        return None
    kind = next(k for k in MEDIA_KINDS if any(key[0] == k for key in found))  # images, then videos, then bags
    within = {key: n for key, n in found.items() if key[0] == kind}
    in_image_folders = {key: n for key, n in within.items() if key[1] != Path()}
    _, prefix, suffix = max(in_image_folders or within, key=lambda key: (within[key], key[2]))
    pattern = str(folder / prefix / "**" / f"*{suffix}")
    return pattern, sum(1 for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)), kind


def _image_folder(parts: tuple[str, ...]) -> Path:
    """The leading parts of a relative folder up to its first image folder name; "." when none."""
    for i, part in enumerate(parts):
        if part in IMAGE_FOLDERS:
            return Path(*parts[: i + 1])
    return Path()

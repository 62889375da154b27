"""What a media file is, told by its name: the one list of image, video and label suffixes.

Every place that sorts files into images and videos asks here: `mslseg infer` sources, the
training datasets, int8 calibration and the train CLI's guess of a target's kind. A new kind of
file (say robot bags) is one more entry in `MEDIA_KINDS`; the error messages list suffixes from it.
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
}
IMAGE_SUFFIXES = MEDIA_KINDS["image"]
VIDEO_SUFFIXES = MEDIA_KINDS["video"]
# label maps must decode to exactly the stored values: lossless formats only (no JPEG, no WebP)
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
# folder names that hold the camera images, not the label maps, in the dataset layouts mslseg reads
# (Cityscapes leftImg8bit/, GTA5 and folder images/, NTHU <City>/Images/, SYNTHIA RGB/)
IMAGE_FOLDERS = frozenset({"leftImg8bit", "images", "Images", "RGB"})

_KIND_BY_SUFFIX = {suffix: kind for kind, suffixes in MEDIA_KINDS.items() for suffix in suffixes}


def kind_of(path: str | os.PathLike[str]) -> str | None:
    """The kind of file `path` names ("image", "video": a key of MEDIA_KINDS) by its suffix in any
    letter case, or None. A URL's query and fragment are ignored (`https://host/clip.mp4?sig=...`)."""
    text = os.fspath(path)
    if "://" in text:
        text = text.split("?")[0].split("#")[0]
    return _KIND_BY_SUFFIX.get(Path(text).suffix.lower())


def is_image(path: str | os.PathLike[str]) -> bool:
    return kind_of(path) == "image"


def is_video(path: str | os.PathLike[str]) -> bool:
    return kind_of(path) == "video"


def is_label(path: str | os.PathLike[str]) -> bool:
    """Whether `path` may hold a label map (a lossless image format)."""
    return Path(path).suffix.lower() in LABEL_SUFFIXES


def suffix_list(*kinds: str) -> str:
    """The suffixes of `kinds` (default: all) for a message: "images: .png .jpg ...; videos: .mp4 ..."."""
    return "; ".join(f"{kind}s: {' '.join(MEDIA_KINDS[kind])}" for kind in kinds or MEDIA_KINDS)


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
            kind = kind_of(name)
            if kind is not None and not name.startswith("."):
                found[kind, _image_folder(parts) if kind == "image" else Path(), Path(name).suffix] += 1
    if not found:
        return None
    kind = "image" if any(k == "image" for k, _, _ in found) else "video"
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

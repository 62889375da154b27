"""Synthetic two-domain street scenes: the data the demo, the tests and the benchmark run on.

A procedural street (sky, buildings, road with lane marks, sidewalk, terrain, trees, poles,
traffic signs and lights, cars, persons: 11 Cityscapes classes, labelled with Cityscapes label
ids) is drawn in two domains with a real appearance shift: "source" is flat, saturated and clean
like a game; "target" is duller, darker, cooler, textured, noisy and blurred, seen from a lower
camera. Every image is a pure function of (seed, domain, split, index), at any size.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mslseg.data.synthetic_render import Camera, render, sample_camera, sample_look
from mslseg.data.synthetic_styles import STYLES
from mslseg.data.synthetic_world import SYNTHETIC_LABEL_IDS, sample_world
from mslseg.runtime.errors import DataError, InputError
from mslseg.runtime.io.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    remove_temporary,
    temporaries,
    writing,
)
from mslseg.runtime.io.video_writer import OpenCVWriter
from mslseg.runtime.sizes import Size

log = logging.getLogger(__name__)

DOMAINS = ("source", "target")
DEFAULT_SIZE = Size(256, 128)
MARKER = "synth.json"  # written into OUT; marks a folder `write_synthetic_dataset` may overwrite
__all__ = ["DOMAINS", "DEFAULT_SIZE", "SYNTHETIC_LABEL_IDS", "SynthSummary", "generate_scene",
           "write_cityscapes_layout", "write_gta5_layout", "write_synthetic_dataset", "write_target_video"]


def _style(domain: str):
    if domain not in STYLES:
        raise InputError(f"unknown synthetic domain '{domain}'; valid: {', '.join(DOMAINS)}")
    return STYLES[domain]


def _check_size(size: Size | str) -> tuple[int, int]:
    """Size or 'WIDTHxHEIGHT' -> (width, height), the order the drawing code uses."""
    chosen = Size.of(size, "synthetic size")
    w, h = chosen.width, chosen.height
    if w < 16 or h < 8:
        raise InputError(f"synthetic size {w}x{h} is too small; use at least 16x8 (width x height)")
    return w, h


def generate_scene(rng: np.random.Generator, domain: str = "source", size: Size | str = DEFAULT_SIZE
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One street scene at `size` (Size or 'WIDTHxHEIGHT'): ((H, W, 3) uint8 BGR image, (H, W) uint8 Cityscapes label ids)."""
    style, size = _style(domain), _check_size(size)
    world = sample_world(rng, style)
    cam = sample_camera(rng, style, size)
    return render(world, style, cam, sample_look(rng, style, size), rng)


def _scene_rng(seed: int, domain: str, split: str, index: int) -> np.random.Generator:
    codes = {"source": 1, "target": 2, "train": 1, "val": 2, "video": 3}
    return np.random.default_rng([seed & 0xFFFFFFFF, codes[domain], codes[split], index])


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise DataError(f"could not encode {path} as PNG")
    # temporary name + rename (a kill never leaves a torn PNG); no fsync: thousands of small,
    # regenerable files
    atomic_write_bytes(path, data.tobytes(), sync=False)


def write_gta5_layout(root: str | Path, n: int, size: Size | str = DEFAULT_SIZE, seed: int = 0) -> Path:
    """Write n source-domain scenes as GTA5: root/images/00001.png, root/labels/00001.png (label ids)."""
    root = Path(root)
    for i in range(n):
        image, label = generate_scene(_scene_rng(seed, "source", "train", i), "source", size)
        _write_png(root / "images" / f"{i + 1:05d}.png", image)
        _write_png(root / "labels" / f"{i + 1:05d}.png", label)
    return root


def write_cityscapes_layout(root: str | Path, n_train: int, n_val: int, size: Size | str = DEFAULT_SIZE,
                            seed: int = 0, city: str = "synthcity") -> Path:
    """Write target-domain scenes as Cityscapes: leftImg8bit/{split}/{city}/ and gtFine/ labelIds."""
    root = Path(root)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            image, label = generate_scene(_scene_rng(seed, "target", split, i), "target", size)
            stem = f"{city}_{i // 100:06d}_{i % 100:06d}"
            _write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            _write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
    return root


def write_target_video(path: str | Path, n_frames: int = 120, size: Size | str = DEFAULT_SIZE,
                       fps: float = 15.0, seed: int = 0) -> Path:
    """A target-domain clip of a camera driving down one street (mp4v), for `mslseg infer` and video tests."""
    path, size = Path(path), _check_size(size)
    style = _style("target")
    rng = _scene_rng(seed, "target", "video", 0)
    speed = float(rng.uniform(6.0, 9.0))  # m/s
    world = sample_world(rng, style, length=90.0 + speed * n_frames / fps)
    cam0, look = sample_camera(rng, style, size), sample_look(rng, style, size)
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    # the runtime's writer: a hidden .partial name renamed when complete, and a full disk or a
    # read-only folder raises OutputError (OpenCV itself only returns False)
    writer = OpenCVWriter(path, fps, (size[1], size[0]))
    try:
        for k in range(n_frames):
            t = k / fps
            cam = Camera(cam0.width, cam0.height, cam0.f, cam0.cam_height, cam0.horizon + math.sin(t * 2.1),
                         cam0.cx + 0.03 * size[0] * math.sin(t * 0.7), x=cam0.x + 0.4 * math.sin(t * 0.5),
                         z=speed * t)
            image, _ = render(world, style, cam, look, rng)
            writer.write(image)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


@dataclass(frozen=True)
class SynthSummary:
    """What `write_synthetic_dataset` wrote."""

    source: Path  # GTA5 layout (source domain)
    target: Path  # Cityscapes layout (target domain: train and val)
    video: Path | None  # target-domain clip
    counts: tuple[int, int, int, int]  # source, target train, target val, video frames
    size: Size
    drift: Path | None = None  # the drifting drive with labels per frame (synthetic_drift)
    drift_frames: int = 0

    def line(self) -> str:
        s, tt, tv, frames = self.counts
        video = f", {frames} target frames to {self.video}" if self.video else ""
        drift = (f", a {self.drift_frames}-frame drifting drive with labels to {self.drift} (segments in "
                 f"{self.drift.with_suffix('.json')})" if self.drift else "")
        return (f"wrote {s} source images to {self.source}, {tt} train + {tv} val target images to "
                f"{self.target}{video}{drift} ({self.size})")


def write_synthetic_dataset(out: str | Path, *, source: int = 200, target_train: int = 200,
                            target_val: int = 50, size: Size | str = DEFAULT_SIZE, video: bool = True,
                            video_frames: int = 120, seed: int = 0, overwrite: bool = False,
                            drift_frames: int = 0) -> SynthSummary:
    """Write OUT/gta5 (source), OUT/cityscapes (target), OUT/target.mp4 and, with `drift_frames`,
    OUT/drift.mp4 with OUT/drift_labels/ and OUT/drift.json (mslseg.data.synthetic_drift).

    A non-empty OUT is refused unless `overwrite` is set and OUT holds an earlier output of this
    function (its synth.json); then only what this function writes is replaced.
    """
    out, size = Path(out), Size.of(size, "synthetic size")
    _check_size(size)
    _prepare_out(out, overwrite)
    # the marker goes first, so that a run killed midway can be redone with --overwrite; it says
    # "complete" only once everything is written
    info = {"seed": seed, "size": str(size), "complete": False}
    atomic_write_text(out / MARKER, json.dumps(info) + "\n")
    gta5 = write_gta5_layout(out / "gta5", source, size, seed)
    cityscapes = write_cityscapes_layout(out / "cityscapes", target_train, target_val, size, seed)
    clip = write_target_video(out / "target.mp4", video_frames, size, seed=seed) if video else None
    if drift_frames:
        from mslseg.data.synthetic_drift import write_drift_video

        write_drift_video(out / "drift.mp4", drift_frames, size, seed=seed)
    counts = (source, target_train, target_val, video_frames if video else 0)
    atomic_write_text(out / MARKER, json.dumps(info | {"counts": list(counts), "complete": True}) + "\n")
    log.info("synthetic data written to %s", out)
    return SynthSummary(gta5, cityscapes, clip, counts, size, out / "drift.mp4" if drift_frames else None,
                        drift_frames)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder to write the synthetic data into")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise InputError(f"{out} is not empty; choose an empty folder or pass --overwrite to replace "
                         "an earlier synth output")
    if not (out / MARKER).is_file():
        raise InputError(f"{out} holds files that mslseg synth did not write (no {MARKER}); "
                         "choose an empty folder")
    for name in ("gta5", "cityscapes", "drift_labels"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("target.mp4", "drift.mp4", "drift.json"):
        (out / name).unlink(missing_ok=True)
    for stale in temporaries(out):  # what an interrupted synth left (the video, the marker)
        remove_temporary(stale)
    (out / MARKER).unlink()

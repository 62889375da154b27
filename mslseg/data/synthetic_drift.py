"""A target-domain drive whose conditions drift, with a label map for every frame: the data on which
online adaptation is measured (static model vs adapting model, mIoU per segment and over time).

The drive is `write_target_video`'s street; on top of the target domain's own look the conditions
change by segment (shares of the clip, `DRIFT`): clean; dusk falling (light dims to 30% and turns
blue, gradually); fog rising (blend towards grey up to 60%, gradually, in daylight); a sudden
switch to a noisy sensor on a lower camera; clean again (does adaptation recover, or did it
forget?). Written as OUT.mp4, OUT_labels/NNNNNN.png (Cityscapes label ids, lossless, frame k is
the k-th frame of the video) and OUT.json (fps, size, frames, the segments).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mslseg.data.synthetic_render import Camera, render, sample_camera, sample_look
from mslseg.data.synthetic_styles import STYLES
from mslseg.data.synthetic_world import sample_world
from mslseg.runtime.io.atomic import atomic_write_bytes, atomic_write_text, writing
from mslseg.runtime.io.video_writer import OpenCVWriter
from mslseg.runtime.sizes import Size

# (name, share of the clip, what happens): in order
DRIFT: tuple[tuple[str, float, str], ...] = (
    ("clean", 0.2, "the target domain as it is"),
    ("dusk", 0.25, "light dims to 30% and turns blue, gradually"),
    ("fog", 0.25, "fog rises to 60%, gradually"),
    ("sudden", 0.15, "at once: a noisy sensor on a camera 40% lower"),
    ("clean again", 0.15, "the target domain as it is"),
)


@dataclass(frozen=True)
class Segment:
    name: str
    start: int  # first frame
    end: int  # one past the last frame
    what: str


def segments(n_frames: int) -> list[Segment]:
    """The drift's segments over `n_frames` frames (DRIFT's shares, rounded; the last takes the rest)."""
    out, start = [], 0
    for k, (name, share, what) in enumerate(DRIFT):
        end = n_frames if k == len(DRIFT) - 1 else min(n_frames, start + round(share * n_frames))
        out.append(Segment(name, start, end, what))
        start = end
    return out


def _conditions(seg: Segment, k: int) -> tuple[float, float, float, float]:
    """(light, fog, noise sigma, camera height factor) at frame k of segment `seg`."""
    t = (k - seg.start) / max(1, seg.end - seg.start - 1)  # 0 -> 1 over the segment
    if seg.name == "dusk":
        return 1.0 - 0.7 * t, 0.0, 0.0, 1.0
    if seg.name == "fog":
        return 1.0, 0.6 * t, 0.0, 1.0
    if seg.name == "sudden":
        return 1.0, 0.0, 18.0, 0.6
    return 1.0, 0.0, 0.0, 1.0


def _apply(image: np.ndarray, light: float, fog: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    img = image.astype(np.float32)
    if light < 1:  # dusk: dimmer, and bluer as it dims (BGR)
        img *= light * np.asarray([1.0 + 0.5 * (1 - light), 1.0, 1.0 - 0.3 * (1 - light)], np.float32)
    if fog > 0:
        img = (1 - fog) * img + fog * 185.0
    if noise > 0:
        img += rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def write_drift_video(path: str | Path, n_frames: int = 2000, size: Size | str = Size(256, 128),
                      fps: float = 15.0, seed: int = 0) -> list[Segment]:
    """Write the drifting drive to `path` (.mp4), its labels and its segments (module docstring)."""
    path = Path(path)
    size = Size.of(size, "drift video size")
    if n_frames < len(DRIFT):
        raise ValueError(f"a drift video needs at least {len(DRIFT)} frames, one per segment")
    style = STYLES["target"]
    rng = np.random.default_rng([seed, 7331])
    speed = float(rng.uniform(6.0, 9.0))
    world = sample_world(rng, style, length=90.0 + speed * n_frames / fps)
    w, h = size.width, size.height
    cam0, look = sample_camera(rng, style, (w, h)), sample_look(rng, style, (w, h))
    labels_dir = path.with_name(path.stem + "_labels")
    with writing(labels_dir):
        labels_dir.mkdir(parents=True, exist_ok=True)
    parts = segments(n_frames)
    writer = OpenCVWriter(path, fps, (h, w))
    try:
        for seg in parts:
            for k in range(seg.start, seg.end):
                t = k / fps
                light, fog, noise, lower = _conditions(seg, k)
                cam = Camera(cam0.width, cam0.height, cam0.f, cam0.cam_height * lower,
                             cam0.horizon + math.sin(t * 2.1), cam0.cx + 0.03 * w * math.sin(t * 0.7),
                             x=cam0.x + 0.4 * math.sin(t * 0.5), z=speed * t)
                image, label = render(world, style, cam, look, rng)
                writer.write(_apply(image, light, fog, noise, rng))
                ok, png = cv2.imencode(".png", label)
                if not ok:
                    raise ValueError(f"cannot encode the label map of frame {k}")
                atomic_write_bytes(labels_dir / f"{k:06d}.png", png.tobytes(), sync=False)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    info = {"video": path.name, "labels": labels_dir.name, "fps": fps, "size": str(size), "frames": n_frames,
            "seed": seed, "segments": [vars(s) for s in parts]}
    atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    return parts

"""Render a synthetic `World` through a pinhole camera into a BGR image and a label-id map.

Every surface is drawn into both canvases with the same polygon, so labels are exact; marks that
are not classes of their own (lane lines, windows, lamps) are drawn into the image only. The
domain's look (white balance, texture, noise, blur) is applied to the finished image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mslseg.data.synthetic_world import (
    BGR,
    BUILDING,
    CAR,
    LIGHT,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SIGN,
    SKY,
    TERRAIN,
    VEGETATION,
    DomainStyle,
    Prop,
    World,
)  # fmt: skip

NEAR = 0.8  # metres: nearer geometry is clipped
FAR = 400.0
SHIFT = 4  # sub-pixel bits for OpenCV drawing, so motion in the video is smooth
TEXTURED = (ROAD, SIDEWALK, BUILDING, TERRAIN, VEGETATION)


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    f: float  # focal length, pixels
    cam_height: float  # metres above the road
    horizon: float  # image row of the horizon
    cx: float  # image column of the vanishing point
    x: float = 0.0  # lateral position, metres
    z: float = 0.0  # position along the street, metres


@dataclass(frozen=True)
class Look:
    """Per-image (or per-video) appearance draws, so a video keeps one look over its frames."""

    brightness: float
    gains: np.ndarray  # (3,) BGR
    texture: np.ndarray  # (H, W, 1) float32, pixel units


def sample_camera(rng: np.random.Generator, style: DomainStyle, size: tuple[int, int]) -> Camera:
    w, h = size
    return Camera(w, h, f=0.9 * w, cam_height=float(rng.uniform(*style.camera_height)),
                  horizon=h * float(rng.uniform(*style.horizon)), cx=w * float(rng.uniform(0.42, 0.58)),
                  x=float(rng.uniform(-1.0, 1.0)))


def sample_look(rng: np.random.Generator, style: DomainStyle, size: tuple[int, int]) -> Look:
    w, h = size
    coarse = rng.normal(0, 1, (h // 8 + 2, w // 8 + 2)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 0.6, (h, w)).astype(np.float32)
    lo, hi = np.asarray(style.gains[0]), np.asarray(style.gains[1])
    return Look(float(rng.uniform(*style.brightness)), rng.uniform(lo, hi).astype(np.float32),
                ((field + fine) * style.texture)[..., None])


class _Canvas:
    def __init__(self, cam: Camera):
        self.cam = cam
        self.image = np.zeros((cam.height, cam.width, 3), np.uint8)
        self.label = np.zeros((cam.height, cam.width), np.uint8)

    def project(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 2) fixed-point pixel coordinates; depth clamped to NEAR."""
        c = self.cam
        zc = np.maximum(pts[:, 2] - c.z, NEAR)
        x = c.cx + c.f * (pts[:, 0] - c.x) / zc
        y = c.horizon + c.f * (c.cam_height - pts[:, 1]) / zc
        return np.round(np.stack([x, y], 1) * (1 << SHIFT)).astype(np.int32)

    def poly(self, pts: list[tuple[float, float, float]], label: int | None, colour: BGR) -> None:
        xy = self.project(np.asarray(pts, np.float64))
        cv2.fillPoly(self.image, [xy], colour, cv2.LINE_8, SHIFT)
        if label is not None:
            cv2.fillPoly(self.label, [xy], int(label), cv2.LINE_8, SHIFT)

    def strip(self, x0: float, x1: float, z0: float, z1: float, label: int | None, colour: BGR) -> None:
        """A rectangle on the road plane from x0 to x1, z0 to z1."""
        self.poly([(x0, 0, z0), (x1, 0, z0), (x1, 0, z1), (x0, 0, z1)], label, colour)

    def box(self, x0: float, x1: float, y0: float, y1: float, z: float, label: int | None, colour: BGR
            ) -> None:
        """An upright rectangle facing the camera at depth z, at least one pixel wide."""
        zc = z - self.cam.z
        min_half = 0.6 * zc / self.cam.f
        if x1 - x0 < 2 * min_half:
            mid = (x0 + x1) / 2
            x0, x1 = mid - min_half, mid + min_half
        self.poly([(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)], label, colour)

    def disc(self, x: float, y: float, z: float, rx: float, ry: float, label: int | None, colour: BGR
             ) -> None:
        zc = z - self.cam.z
        (cx, cy), = self.project(np.asarray([(x, y, z)]))
        axes = (max(int(self.cam.f * rx / zc * (1 << SHIFT)), 1 << SHIFT),
                max(int(self.cam.f * ry / zc * (1 << SHIFT)), 1 << SHIFT))
        cv2.ellipse(self.image, (int(cx), int(cy)), axes, 0, 0, 360, colour, -1, cv2.LINE_8, SHIFT)
        if label is not None:
            cv2.ellipse(self.label, (int(cx), int(cy)), axes, 0, 0, 360, int(label), -1, cv2.LINE_8, SHIFT)


def _shade(colour: BGR, k: float) -> BGR:
    return tuple(int(min(255, v * k)) for v in colour)  # type: ignore[return-value]


def _ground(cv: _Canvas, world: World, style: DomainStyle) -> None:
    c = cv.cam
    rows = np.clip((np.arange(c.height) - (c.horizon - c.height * 0.6)) / (c.height * 0.6), 0, 1)
    sky = np.asarray(style.sky[0], np.float32) + rows[:, None] * (np.subtract(style.sky[1], style.sky[0]))
    cv.image[:] = sky.astype(np.uint8)[:, None, :]
    cv.label[:] = SKY
    z0, z1 = c.z, c.z + FAR
    wide = 500.0
    cv.strip(-wide, wide, z0, z1, TERRAIN, style.terrain)
    rh, sw = world.road_half, world.sidewalk
    for side in (-1, 1):
        cv.strip(side * rh, side * (rh + sw), z0, z1, SIDEWALK, style.sidewalk)
    cv.strip(-rh, rh, z0, z1, ROAD, style.road)
    for side in (-1, 1):  # edge lines, then the dashed divider: paint on the road, still road
        e = side * (rh - 0.3)
        cv.strip(e - 0.08, e + 0.08, z0, z1, None, style.lane)
    dash = np.floor(c.z / 9.0) * 9.0
    for k in range(24):
        a = dash + 9.0 * k
        cv.strip(world.lane_x - 0.1, world.lane_x + 0.1, a, a + 3, None, style.lane)


def _buildings(cv: _Canvas, world: World, style: DomainStyle) -> None:
    zmin = cv.cam.z + NEAR
    for b in sorted(world.buildings, key=lambda b: -b.z0):
        if b.z1 <= zmin:
            continue
        xf, h = world.facade_x(b.side), b.height
        z0 = max(b.z0, zmin)
        cv.poly([(xf, 0, z0), (xf, 0, b.z1), (xf, h, b.z1), (xf, h, z0)], BUILDING, b.colour)
        if b.floors:
            _windows(cv, xf, b.z0, b.z1, h, style.window)
        if b.z0 > zmin:
            end = xf + b.side * 25
            cv.poly([(xf, 0, b.z0), (end, 0, b.z0), (end, h, b.z0), (xf, h, b.z0)], BUILDING,
                    _shade(b.colour, 0.7))


def _windows(cv: _Canvas, xf: float, z0: float, z1: float, h: float, colour: BGR) -> None:
    c = cv.cam
    zs = np.arange(z0 + 1.0, z1 - 2.0, 3.0)
    zc = zs - c.z
    zs = zs[(zc > NEAR + 0.5) & (c.f * 1.5 / np.maximum(zc, 1e-3) >= 1.2)]  # skip sub-pixel windows
    ys = np.arange(1.0, h - 2.0, 3.2)
    if not len(zs) or not len(ys):
        return
    zz, yy = (a.ravel() for a in np.meshgrid(zs, ys))
    corners = np.stack([np.stack([np.full_like(zz, xf), yy + dy, zz + dz], 1)
                        for dy, dz in ((0, 0), (0, 1.6), (1.5, 1.6), (1.5, 0))], 1)  # (N, 4, 3)
    xy = cv.project(corners.reshape(-1, 3)).reshape(-1, 4, 2)
    cv2.fillPoly(cv.image, list(xy), colour, cv2.LINE_8, SHIFT)


def _tree(cv: _Canvas, p: Prop) -> None:
    cv.box(p.x - 0.15, p.x + 0.15, 0, 2.4, p.z, VEGETATION, _shade(p.colour2, 0.6))
    cv.disc(p.x, 2.4 + p.size * 0.8, p.z, p.size, p.size * 1.1, VEGETATION, p.colour)


def _pole(cv: _Canvas, p: Prop) -> None:
    h = p.size
    cv.box(p.x - 0.08, p.x + 0.08, 0, h, p.z, POLE, p.colour)
    if p.variant == 1:
        cv.disc(p.x, h - 0.4, p.z - 0.05, 0.38, 0.38, SIGN, p.colour2)
    elif p.variant == 2:
        cv.box(p.x - 0.4, p.x + 0.4, h - 1.0, h - 0.2, p.z - 0.05, SIGN, p.colour2)
    elif p.variant == 3:
        cv.box(p.x - 0.2, p.x + 0.2, h - 1.1, h, p.z - 0.05, LIGHT, (35, 35, 35))
        lamp = [(40, 40, 230), (40, 200, 230), (80, 220, 60)][int(p.z * 7) % 3]
        cv.disc(p.x, h - 0.25 - 0.3 * (int(p.z * 7) % 3), p.z - 0.1, 0.1, 0.1, None, lamp)


def _car(cv: _Canvas, p: Prop) -> None:
    x, z, length = p.x, p.z, p.size
    side = x - 0.9 if x > cv.cam.x else x + 0.9
    inward = 0.15 if x > cv.cam.x else -0.15
    body = p.colour
    cv.poly([(side, 0.25, z), (side, 0.25, z + length), (side, 0.95, z + length), (side, 0.95, z)],
            CAR, _shade(body, 0.8))
    cv.poly([(side + inward, 0.95, z + 0.8), (side + inward, 0.95, z + length - 0.8),
             (side + inward, 1.4, z + length - 1.2), (side + inward, 1.4, z + 1.3)], CAR, p.colour2)
    cv.box(x - 0.9, x + 0.9, 0.25, 0.95, z, CAR, body)
    cv.poly([(x - 0.78, 0.95, z + 0.3), (x + 0.78, 0.95, z + 0.3), (x + 0.62, 1.45, z + 0.6),
             (x - 0.62, 1.45, z + 0.6)], CAR, _shade(body, 0.9))
    cv.poly([(x - 0.62, 1.0, z + 0.33), (x + 0.62, 1.0, z + 0.33), (x + 0.52, 1.38, z + 0.57),
             (x - 0.52, 1.38, z + 0.57)], None, p.colour2)
    for wx in (-0.85, 0.55):
        cv.box(x + wx, x + wx + 0.3, 0.0, 0.3, z + 0.2, CAR, (25, 25, 25))
    for lx in (-0.85, 0.65):
        cv.box(x + lx, x + lx + 0.2, 0.7, 0.85, z - 0.01, None, (30, 30, 200))


def _person(cv: _Canvas, p: Prop) -> None:
    k = p.size / 1.75
    cv.box(p.x - 0.17, p.x - 0.03, 0, 0.85 * k, p.z, PERSON, p.colour2)
    cv.box(p.x + 0.03, p.x + 0.17, 0, 0.85 * k, p.z, PERSON, p.colour2)
    cv.box(p.x - 0.22, p.x + 0.22, 0.85 * k, 1.47 * k, p.z, PERSON, p.colour)
    cv.disc(p.x, p.size - 0.13, p.z, 0.12, 0.14, PERSON, (120, 150, 200))


PROP_DRAWERS = {"tree": _tree, "pole": _pole, "car": _car, "person": _person}


def render(world: World, style: DomainStyle, cam: Camera, look: Look, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 BGR image and (H, W) uint8 Cityscapes label ids of `world` seen by `cam`."""
    cv = _Canvas(cam)
    _ground(cv, world, style)
    _buildings(cv, world, style)
    for p in sorted(world.props, key=lambda p: -p.z):
        if p.z - cam.z > NEAR + 0.3:
            PROP_DRAWERS[p.kind](cv, p)
    return finish(cv.image, cv.label, style, look, rng), cv.label


def finish(image: np.ndarray, label: np.ndarray, style: DomainStyle, look: Look, rng: np.random.Generator
           ) -> np.ndarray:
    """The domain's camera: texture, exposure, white balance, saturation, gamma, vignette, blur, noise."""
    img = image.astype(np.float32)
    if style.texture > 0:
        img += look.texture * np.isin(label, TEXTURED)[..., None]
    img *= look.brightness * look.gains
    grey = img.mean(axis=2, keepdims=True)
    img = grey + style.saturation * (img - grey)
    img = 255.0 * np.clip(img / 255.0, 0, 1) ** style.gamma
    h, w = label.shape
    if style.vignette > 0:
        yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
        img *= (1 - style.vignette * 0.5 * (xx**2 + yy**2)).astype(np.float32)[..., None]
    if style.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=style.blur * w / 256)
    if style.noise > 0:
        img += rng.normal(0, style.noise, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)

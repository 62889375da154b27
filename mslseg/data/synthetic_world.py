"""A procedural street in world coordinates (metres), sampled from a domain's style.

X is lateral (right positive), Y height above the road, Z depth along the street. The world is
fixed once sampled, so a moving camera (the target video) sees the same street frame after frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BGR = tuple[int, int, int]

# Cityscapes label ids of the classes the generator draws.
ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = (
    7, 8, 11, 17, 19, 20, 21, 22, 23, 24, 26,
)
SYNTHETIC_LABEL_IDS = (ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR)


@dataclass(frozen=True)
class DomainStyle:
    """How a domain looks (colours, post-processing) and how its streets are laid out."""

    sky: tuple[BGR, BGR]  # top and horizon colour
    road: BGR
    sidewalk: BGR
    terrain: BGR
    vegetation: BGR
    pole: BGR
    lane: BGR
    window: BGR
    buildings: tuple[BGR, ...]
    car_colours: tuple[BGR, ...]
    clothes: tuple[BGR, ...]
    signs: tuple[BGR, ...]
    jitter: float  # per-object colour jitter (pixel units)
    horizon: tuple[float, float]  # horizon row as a fraction of the height
    camera_height: tuple[float, float]  # metres
    brightness: tuple[float, float]  # per-image gain
    gains: tuple[tuple[float, float, float], tuple[float, float, float]]  # white balance: low, high (BGR)
    saturation: float  # 1 keeps colours, 0 is grey
    gamma: float  # > 1 darkens mid-tones
    texture: float  # amplitude of surface texture (pixel units)
    noise: float  # sensor noise sigma (pixel units)
    blur: float  # Gaussian sigma in pixels at 256 px width
    vignette: float  # darkening at the corners (0..1)
    n_cars: tuple[int, int] = (2, 6)  # cars per scene (inclusive range)
    n_persons: tuple[int, int] = (1, 4)  # persons per scene
    setback: tuple[float, float] = (0.0, 4.0)  # terrain strip between sidewalk and buildings (m)


@dataclass(frozen=True)
class Building:
    side: int  # -1 left, +1 right
    z0: float
    z1: float
    height: float
    colour: BGR
    floors: bool  # draw windows


@dataclass(frozen=True)
class Prop:
    kind: str  # tree | pole | car | person
    x: float
    z: float
    size: float  # tree canopy radius, pole height, person height, car length
    colour: BGR
    colour2: BGR  # second colour: trousers, sign, car cabin
    variant: int  # sign shape (0 none, 1 round, 2 rectangle, 3 traffic light), tree trunk share


@dataclass(frozen=True)
class World:
    road_half: float
    sidewalk: float
    setback: tuple[float, float]  # left, right
    lane_x: float  # lane divider
    buildings: tuple[Building, ...]
    props: tuple[Prop, ...]  # any order; the renderer sorts by depth

    def facade_x(self, side: int) -> float:
        return side * (self.road_half + self.sidewalk + self.setback[0 if side < 0 else 1])


def jitter(rng: np.random.Generator, colour: BGR, amount: float) -> BGR:
    c = np.asarray(colour, np.float64) + rng.normal(0, amount, 3) + rng.normal(0, amount / 2)
    return tuple(int(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, colours: tuple[BGR, ...], amount: float) -> BGR:
    return jitter(rng, colours[int(rng.integers(len(colours)))], amount)


def sample_world(rng: np.random.Generator, style: DomainStyle, z_start: float = 0.0, length: float = 90.0
                 ) -> World:
    """A street from z_start to z_start + length (buildings run further, to the vanishing point)."""
    road_half = float(rng.uniform(3.5, 6.0))
    sidewalk = float(rng.uniform(2.0, 4.0))
    setback = (float(rng.uniform(*style.setback)), float(rng.uniform(*style.setback)))
    world = World(road_half, sidewalk, setback, float(rng.uniform(-0.5, 0.5)), (), ())
    buildings = []
    for side in (-1, 1):
        z = z_start - 5.0
        while z < z_start + length + 120:
            span = float(rng.uniform(8, 30))
            if rng.random() > 0.15:  # else a gap
                colour = _pick(rng, style.buildings, style.jitter)
                buildings.append(Building(side, z, z + span, float(rng.uniform(7, 28)), colour,
                                          bool(rng.random() < 0.85)))
            z += span + float(rng.uniform(0, 2))
    props = _poles_and_trees(rng, style, world, z_start, length)
    props += _cars(rng, style, world, z_start, length) + _persons(rng, style, world, z_start, length)
    return World(road_half, sidewalk, setback, world.lane_x, tuple(buildings), tuple(props))


def _poles_and_trees(rng: np.random.Generator, style: DomainStyle, w: World, z0: float, length: float
                     ) -> list[Prop]:
    props = []
    for side in (-1, 1):
        curb = side * (w.road_half + 0.4)
        z = z0 + float(rng.uniform(2, 15))
        while z < z0 + length:
            variant = int(rng.choice(4, p=(0.35, 0.25, 0.2, 0.2)))
            props.append(Prop("pole", curb, z, float(rng.uniform(3.5, 6.5)), style.pole,
                              _pick(rng, style.signs, style.jitter / 2), variant))
            z += float(rng.uniform(12, 30))
        z = z0 + float(rng.uniform(1, 10))
        while z < z0 + length:
            x = side * (w.road_half + w.sidewalk * float(rng.uniform(0.55, 0.9)))
            if rng.random() < 0.5 and w.setback[0 if side < 0 else 1] > 1.5:
                x = side * (w.road_half + w.sidewalk + w.setback[0 if side < 0 else 1] / 2)
            props.append(Prop("tree", x, z, float(rng.uniform(1.4, 3.0)),
                              jitter(rng, style.vegetation, style.jitter), style.pole, 0))
            z += float(rng.uniform(6, 25))
    return props


def _cars(rng: np.random.Generator, style: DomainStyle, w: World, z0: float, length: float) -> list[Prop]:
    cars = []
    for _ in range(int(rng.integers(style.n_cars[0], style.n_cars[1] + 1))):
        lane = int(rng.integers(4))
        parked = w.road_half - 1.1
        x = [-parked, w.lane_x - w.road_half / 2, w.lane_x + w.road_half / 2, parked][lane]
        cars.append(Prop("car", x, z0 + float(rng.uniform(7, length * 0.6)), float(rng.uniform(3.8, 4.8)),
                         _pick(rng, style.car_colours, style.jitter), (40, 40, 40), lane))
    return cars


def _persons(rng: np.random.Generator, style: DomainStyle, w: World, z0: float, length: float) -> list[Prop]:
    persons = []
    for _ in range(int(rng.integers(style.n_persons[0], style.n_persons[1] + 1))):
        side = -1 if rng.random() < 0.5 else 1
        x = side * (w.road_half + w.sidewalk * float(rng.uniform(0.2, 0.8)))
        z, height = z0 + float(rng.uniform(5, length * 0.5)), float(rng.uniform(1.6, 1.9))
        top, legs = _pick(rng, style.clothes, style.jitter), _pick(rng, style.clothes, style.jitter)
        persons.append(Prop("person", x, z, height, top, legs, 0))
    return persons

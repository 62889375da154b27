"""The two synthetic domains: a bright, flat "game" source and a dull, noisy "camera" target.

They share the street layout and every class's shape; they differ in palette, white balance,
exposure, texture, noise, blur, and in camera height and horizon, the way GTA5 and Cityscapes
differ. Colours are BGR.
"""

from __future__ import annotations

from mslseg.data.synthetic_world import DomainStyle

SOURCE = DomainStyle(
    sky=((230, 150, 50), (250, 215, 160)),
    road=(100, 80, 95),
    sidewalk=(180, 140, 215),
    terrain=(90, 200, 130),
    vegetation=(40, 175, 45),
    pole=(150, 150, 150),
    lane=(255, 255, 255),
    window=(235, 205, 150),
    buildings=((70, 110, 200), (140, 185, 225), (175, 150, 125), (110, 110, 205), (90, 160, 190)),
    car_colours=((30, 30, 210), (210, 90, 20), (30, 210, 235), (235, 235, 235), (50, 50, 50), (40, 150, 40)),
    clothes=((200, 60, 60), (60, 60, 210), (60, 170, 60), (45, 45, 45), (210, 210, 210), (30, 140, 230)),
    signs=((30, 210, 245), (40, 40, 225), (210, 130, 20)),
    jitter=12.0,
    horizon=(0.38, 0.48),
    camera_height=(1.5, 2.0),
    brightness=(0.95, 1.1),
    gains=((0.97, 0.97, 0.97), (1.03, 1.03, 1.03)),
    saturation=1.0,
    gamma=1.0,
    texture=1.5,
    noise=0.0,
    blur=0.0,
    vignette=0.0,
    n_cars=(2, 6),
    n_persons=(1, 4),
    setback=(0.0, 5.0),
)

TARGET = DomainStyle(
    sky=((205, 195, 185), (235, 232, 228)),
    road=(88, 84, 82),
    sidewalk=(150, 140, 145),
    terrain=(95, 150, 125),
    vegetation=(50, 115, 80),
    pole=(115, 115, 115),
    lane=(175, 215, 225),
    window=(70, 60, 55),
    buildings=((115, 120, 130), (155, 155, 155), (95, 105, 125), (135, 145, 165), (120, 110, 105)),
    car_colours=((65, 65, 65), (160, 160, 160), (110, 70, 40), (45, 45, 130), (205, 205, 205), (70, 90, 70)),
    clothes=((90, 60, 50), (50, 50, 60), (120, 120, 120), (70, 80, 140), (150, 130, 110), (40, 40, 40)),
    signs=((45, 45, 180), (150, 95, 35), (40, 165, 205)),
    jitter=10.0,
    horizon=(0.30, 0.42),
    camera_height=(1.1, 1.5),
    brightness=(0.75, 0.95),
    gains=((1.05, 0.95, 0.80), (1.20, 1.05, 0.95)),
    saturation=0.7,
    gamma=1.2,
    texture=6.0,
    noise=4.0,
    blur=0.8,
    vignette=0.35,
    n_cars=(3, 8),
    n_persons=(2, 6),
    setback=(0.0, 2.5),
)

STYLES = {"source": SOURCE, "target": TARGET}

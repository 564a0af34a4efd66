"""The large layout of a layout group: archetype, land cover, water, roads and structures.

One function per archetype lays out its scene in the same three steps: the ground (land
cover, water, runway) on a float canvas, then roads, then mid-scale structures drawn on
the frozen PIL image. Every draw comes from one generator seeded with ``[seed, group, 0]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from . import structures, terrain
from .raster import blend, dilate, rotated_frame
from .scene import Archetype, LandCover, Layout, LinearFeature, Point, choose
from .structures import BuildSite, StructureBuilder


@dataclass(frozen=True)
class ArchetypeSpec:
    """The land covers an archetype may have and how often it is drawn (relative weight)."""

    land_covers: tuple[LandCover, ...]
    weight: int


ARCHETYPES: dict[Archetype, ArchetypeSpec] = {
    Archetype.AIRPORT: ArchetypeSpec((LandCover.FARMLAND, LandCover.GRASSLAND, LandCover.DESERT), 3),
    Archetype.HARBOUR: ArchetypeSpec(
        (
            LandCover.DENSE_RESIDENTIAL,
            LandCover.SPARSE_RESIDENTIAL,
            LandCover.DESERT,
            LandCover.FOREST,
            LandCover.GRASSLAND,
        ),
        3,
    ),
    Archetype.RIVER: ArchetypeSpec(
        (
            LandCover.FARMLAND,
            LandCover.FOREST,
            LandCover.DESERT,
            LandCover.DENSE_RESIDENTIAL,
            LandCover.SPARSE_RESIDENTIAL,
            LandCover.GRASSLAND,
        ),
        3,
    ),
    Archetype.RESIDENTIAL: ArchetypeSpec((LandCover.DENSE_RESIDENTIAL, LandCover.SPARSE_RESIDENTIAL), 3),
    Archetype.INDUSTRIAL: ArchetypeSpec(
        (LandCover.DESERT, LandCover.GRASSLAND, LandCover.FARMLAND, LandCover.SPARSE_RESIDENTIAL), 2
    ),
    Archetype.RURAL: ArchetypeSpec((LandCover.FARMLAND, LandCover.FOREST, LandCover.DESERT, LandCover.GRASSLAND), 2),
    Archetype.LAKE: ArchetypeSpec(
        (LandCover.FOREST, LandCover.FARMLAND, LandCover.GRASSLAND, LandCover.SPARSE_RESIDENTIAL), 2
    ),
}


@dataclass
class Ground:
    """The layout while its ground is painted: the float canvas and where structures may go."""

    rng: np.random.Generator
    layout: Layout
    canvas: np.ndarray
    buildable: np.ndarray
    grid_angle: float  # roads and structures align with it
    road_strips: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.road_strips = np.zeros_like(self.buildable)


@dataclass(frozen=True)
class StructureRequest:
    """A structure to try to build, near a point or beside the previous structure built."""

    builder: StructureBuilder
    near: Point | None = None
    beside_previous: bool = False


@dataclass(frozen=True)
class Runway:
    """Where an airport's runway and apron lie, to put the terminal buildings beside them."""

    centre: Point
    angle: float
    apron_side: float  # +1 or -1: which side of the runway the apron is on
    apron_along: float
    apron_across: float

    def beside_apron(self, distance: float) -> Point:
        """A point ``distance`` pixels beyond the apron's middle, away from the runway."""
        across = self.apron_across + self.apron_side * distance
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return (
            self.centre[0] + self.apron_along * cos - across * sin,
            self.centre[1] + self.apron_along * sin + across * cos,
        )


def build_layout(seed: int, group: int, size: int) -> Layout:
    """Render the large layout and structures of layout group ``group``."""
    rng = np.random.default_rng([seed, group, 0])
    archetypes = list(ARCHETYPES)
    weights = np.array([ARCHETYPES[archetype].weight for archetype in archetypes], dtype=np.float64)
    archetype = archetypes[int(rng.choice(len(archetypes), p=weights / weights.sum()))]
    cover = choose(rng, ARCHETYPES[archetype].land_covers)
    dense = bool(rng.random() < 0.5)
    sun_angle = rng.uniform(0, 2 * np.pi)
    layout = Layout(
        size=size, archetype=archetype, land_cover=cover, dense=dense, sun=(math.cos(sun_angle), math.sin(sun_angle))
    )
    canvas = terrain.land_cover(rng, size, cover, layout.scale, dense)
    ground = Ground(
        rng, layout, canvas, buildable=np.ones((size, size), dtype=bool), grid_angle=float(rng.uniform(-0.4, 0.4))
    )
    LAY_OUT[archetype](ground)
    return layout


# ----------------------------------------------------------------------------- shared steps
def grid_roads(ground: Ground, count: int) -> None:
    """One road along the grid angle (slightly turned) and, for two, a second across it."""
    for k in range(count):
        angle = ground.grid_angle + (np.pi / 2 if k == 1 else 0.0) + (ground.rng.uniform(-0.2, 0.2) if k == 0 else 0.0)
        ground.road_strips |= terrain.road(ground.rng, ground.canvas, ground.layout, angle=angle)


def finish_ground(ground: Ground, road_count: int) -> BuildSite:
    """Record the roads, freeze the canvas into the layout's image and return where to build."""
    layout = ground.layout
    if road_count:
        layout.features.append(LinearFeature.TWO_ROADS if road_count == 2 else LinearFeature.ROAD)
    ground.buildable &= ~ground.road_strips
    layout.image = Image.fromarray(np.clip(ground.canvas, 0, 255).astype(np.uint8), "RGB")
    return BuildSite(
        rng=ground.rng,
        draw=ImageDraw.Draw(layout.image, "RGBA"),
        layout=layout,
        buildable=ground.buildable,
        blocked=np.zeros((layout.size, layout.size), dtype=bool),
        angle=ground.grid_angle,
    )


def build_structures(site: BuildSite, requests: list[StructureRequest]) -> None:
    """Build the requested structures in order; those that find no room are left out."""
    previous = None
    for request in requests:
        near = (previous.centre if previous else None) if request.beside_previous else request.near
        built = request.builder(site, near)
        if built is not None:
            site.layout.structures.append(built)
            previous = built


def maybe(rng: np.random.Generator, probability: float) -> bool:
    """One uniform draw: true with ``probability``."""
    return bool(rng.random() < probability)


# ----------------------------------------------------------------------------- archetypes
def runway(ground: Ground) -> Runway:
    """A runway with a taxiway, connectors and an apron whose stands are spots for planes."""
    rng, layout, canvas = ground.rng, ground.layout, ground.canvas
    size, scale = layout.size, layout.scale
    angle = float(rng.uniform(0, np.pi))
    centre_x, centre_y = rng.uniform(0.4, 0.6, 2) * size
    along, across = rotated_frame(size, centre_x, centre_y, angle)
    runway_width = rng.uniform(15, 19) * scale
    side = 1.0 if rng.random() < 0.5 else -1.0
    taxiway = side * (runway_width / 2 + 14 * scale)
    apron_near, apron_far = taxiway + side * 5 * scale, taxiway + side * 38 * scale
    apron_along = rng.uniform(-30, 30) * scale
    apron_length = rng.uniform(110, 150) * scale
    towards_apron = across * side
    apron = (
        (towards_apron > min(abs(apron_near), abs(apron_far)) - 0.1)
        & (towards_apron < max(abs(apron_near), abs(apron_far)))
        & (np.abs(along - apron_along) < apron_length / 2)
    )
    thin_line = 0.5 * max(scale, 0.6)
    blend(canvas, apron, (160, 160, 154))
    blend(canvas, np.abs(across - taxiway) < 3 * scale, (130, 130, 126))
    blend(canvas, np.abs(across - taxiway) < thin_line, (214, 186, 60), 0.8)
    for end in (-1, 1):  # connectors runway <-> taxiway
        connector = np.abs(along - apron_along - end * apron_length * 0.3) < 3 * scale
        blend(canvas, connector & (towards_apron > 0) & (towards_apron < abs(taxiway)), (130, 130, 126))
    blend(canvas, np.abs(across) < runway_width / 2 + 2 * scale, (190, 180, 150), 0.5)
    blend(canvas, np.abs(across) < runway_width / 2, (172, 172, 166))
    blend(canvas, (np.abs(across) < 0.7 * max(scale, 0.6)) & (np.mod(along, 16 * scale) < 8 * scale), (244, 244, 240))
    blend(canvas, (np.abs(np.abs(across) - runway_width / 2 + 1.2 * scale) < thin_line), (230, 230, 226), 0.7)
    layout.features.append(LinearFeature.RUNWAY)
    ground.buildable &= ~(
        (towards_apron > -runway_width)
        & (towards_apron < abs(apron_far) + 4 * scale)
        & (np.abs(along - apron_along) < apron_length / 2 + 6 * scale)
    )
    ground.buildable &= ~(np.abs(across) < runway_width)
    # planes park in a row on the apron, noses towards the taxiway
    n_stands = int(apron_length // (26 * scale))
    apron_middle = side * (abs(apron_near) + abs(apron_far)) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    for k in range(n_stands):
        stand_along = apron_along - apron_length / 2 + apron_length / n_stands * (k + 0.5)
        layout.apron_spots.append(
            (
                centre_x + stand_along * cos - apron_middle * sin,
                centre_y + stand_along * sin + apron_middle * cos,
                angle - side * np.pi / 2,
            )
        )
    ground.grid_angle = angle
    return Runway((centre_x, centre_y), angle, side, apron_along, apron_middle)


def airport(ground: Ground) -> None:
    """A runway with its apron; terminal buildings and a car park beside it."""
    rng, scale = ground.rng, ground.layout.scale
    strip = runway(ground)
    site = finish_ground(ground, road_count=0)
    requests = []
    if maybe(rng, 0.75):
        requests.append(StructureRequest(structures.building_block, near=strip.beside_apron(58 * scale)))
    if maybe(rng, 0.6):
        requests.append(StructureRequest(structures.parking_lot, beside_previous=True))
    build_structures(site, requests)


def harbour(ground: Ground) -> None:
    """A coast with a harbour; maybe a coastal road, a tank farm and buildings."""
    rng, layout = ground.rng, ground.layout
    size, scale = layout.size, layout.scale
    sea, coast_angle, coast_offset, distance_to_coast = terrain.coast(rng, ground.canvas, layout)
    ground.buildable &= distance_to_coast < -6 * scale
    layout.water_mask = sea
    ground.grid_angle = coast_angle
    road_count = 0
    if maybe(rng, 0.5):
        inland = coast_offset - 22 * scale
        along_coast = (size / 2 - inland * math.sin(coast_angle), size / 2 + inland * math.cos(coast_angle))
        ground.road_strips |= terrain.road(rng, ground.canvas, layout, angle=coast_angle, through=along_coast)
        road_count = 1
    site = finish_ground(ground, road_count)
    layout.structures.append(structures.harbour(site, coast_offset))
    requests = []
    if maybe(rng, 0.45):
        requests.append(StructureRequest(structures.tank_farm))
    if maybe(rng, 0.6):
        requests.append(StructureRequest(structures.building_block))
    build_structures(site, requests)


def river(ground: Ground) -> None:
    """A river, maybe bridged by a road; buildings, a car park or a sports field on its banks."""
    rng, layout = ground.rng, ground.layout
    layout.water_mask = terrain.river(rng, ground.canvas, layout)
    ground.buildable &= ~dilate(layout.water_mask, 8)
    ground.grid_angle = layout.river_angle
    road_count = 0
    if maybe(rng, 0.5):
        angle = layout.river_angle + np.pi / 2 + rng.uniform(-0.4, 0.4)
        centre = (layout.size / 2, layout.size / 2)
        ground.road_strips |= terrain.road(rng, ground.canvas, layout, angle=angle, through=centre)
        layout.features.append(LinearFeature.BRIDGE)
        road_count = 1
    site = finish_ground(ground, road_count)
    requests = []
    if maybe(rng, 0.5):
        requests.append(StructureRequest(structures.building_block))
    if maybe(rng, 0.35):
        requests.append(StructureRequest(structures.parking_lot, beside_previous=True))
    if layout.land_cover.is_residential and maybe(rng, 0.4):
        requests.append(StructureRequest(structures.sports_field))
    build_structures(site, requests)


def lake(ground: Ground) -> None:
    """A lake, maybe a road, maybe buildings."""
    rng, layout = ground.rng, ground.layout
    layout.water_mask = terrain.lake(rng, ground.canvas, layout)
    ground.buildable &= ~dilate(layout.water_mask, 10)
    road_count = 1 if maybe(rng, 0.5) else 0
    grid_roads(ground, road_count)
    site = finish_ground(ground, road_count)
    build_structures(site, [StructureRequest(structures.building_block)] if maybe(rng, 0.35) else [])


def residential(ground: Ground) -> None:
    """Houses along one or two roads, a block of buildings with a car park, often a sports field."""
    rng = ground.rng
    road_count = 2 if maybe(rng, 0.35) else 1
    grid_roads(ground, road_count)
    site = finish_ground(ground, road_count)
    requests = [
        StructureRequest(structures.building_block),
        StructureRequest(structures.parking_lot, beside_previous=True),
    ]
    if maybe(rng, 0.7):
        requests.append(StructureRequest(structures.sports_field))
    build_structures(site, requests)


def industrial(ground: Ground) -> None:
    """A road and a tank farm, often buildings and a car park."""
    rng = ground.rng
    grid_roads(ground, 1)
    site = finish_ground(ground, road_count=1)
    requests = [StructureRequest(structures.tank_farm)]
    if maybe(rng, 0.7):
        requests.append(StructureRequest(structures.building_block))
    if maybe(rng, 0.5):
        requests.append(StructureRequest(structures.parking_lot, beside_previous=True))
    build_structures(site, requests)


def rural(ground: Ground) -> None:
    """Open land with one or two roads, sometimes a farmstead and a car park."""
    rng = ground.rng
    road_count = 2 if maybe(rng, 0.35) else 1
    grid_roads(ground, road_count)
    site = finish_ground(ground, road_count)
    requests = []
    if maybe(rng, 0.5):
        requests.append(StructureRequest(structures.building_block))
    if maybe(rng, 0.3):
        requests.append(StructureRequest(structures.parking_lot, beside_previous=True))
    build_structures(site, requests)


LAY_OUT: dict[Archetype, Callable[[Ground], None]] = {
    Archetype.AIRPORT: airport,
    Archetype.HARBOUR: harbour,
    Archetype.RIVER: river,
    Archetype.RESIDENTIAL: residential,
    Archetype.INDUSTRIAL: industrial,
    Archetype.RURAL: rural,
    Archetype.LAKE: lake,
}

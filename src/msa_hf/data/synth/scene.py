"""The vocabulary and records of an ``rs-synth`` scene, shared by every stage of the generator.

The enums are ``str`` subclasses whose values are the words written into the corpus JSON, so
a scene's facts serialise to exactly the strings the captions are built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import numpy as np
from PIL import Image

Point = tuple[float, float]
Pose = tuple[float, float, float]  # x, y, heading angle in radians
RoadLine = tuple[float, float, float, float]  # a point on the road's centre line, its angle, its width

T = TypeVar("T")

# Scenes are designed at 224 px; every length is multiplied by ``size / REFERENCE_SIZE``.
REFERENCE_SIZE = 224.0


class Label(str, Enum):
    """An enum whose members format as their value (the word written into captions and JSON)."""

    def __str__(self) -> str:
        return str(self.value)


class Archetype(Label):
    """What a layout group is a scene of; decides its large layout and structures."""

    AIRPORT = "airport"
    HARBOUR = "harbour"
    RIVER = "river"
    RESIDENTIAL = "residential"
    INDUSTRIAL = "industrial"
    RURAL = "rural"
    LAKE = "lake"


class LandCover(Label):
    """The background texture of a scene."""

    FARMLAND = "farmland"
    FOREST = "forest"
    DESERT = "desert"
    GRASSLAND = "grassland"
    DENSE_RESIDENTIAL = "dense_residential"
    SPARSE_RESIDENTIAL = "sparse_residential"

    @property
    def is_residential(self) -> bool:
        return self in (LandCover.DENSE_RESIDENTIAL, LandCover.SPARSE_RESIDENTIAL)


class LinearFeature(Label):
    """Large linear or areal features a layout can contain (the captions' layout facts)."""

    RIVER = "river"
    COASTLINE = "coastline"
    LAKE = "lake"
    ROAD = "road"
    TWO_ROADS = "two roads"
    RUNWAY = "runway"
    BRIDGE = "bridge"


class WaterKind(Label):
    """The open water of a layout, where ships may sail."""

    RIVER = "river"
    SEA = "sea"
    LAKE = "lake"


class StructureKind(Label):
    """Mid-scale structures."""

    BUILDINGS = "buildings"
    PARKING_LOT = "parking lot"
    BASEBALL_FIELD = "baseball field"
    FOOTBALL_FIELD = "football field"
    TENNIS_COURT = "tennis court"
    PLAYGROUND = "playground"
    TANK_FARM = "tank farm"
    HARBOUR = "harbour"


SPORTS_FIELDS = (
    StructureKind.BASEBALL_FIELD,
    StructureKind.FOOTBALL_FIELD,
    StructureKind.TENNIS_COURT,
    StructureKind.PLAYGROUND,
)


class ObjectKind(Label):
    """Small objects, counted and coloured in the captions."""

    PLANE = "plane"
    SHIP = "ship"
    CAR = "car"
    TANK = "tank"


class ObjectSite(Label):
    """Where a group of small objects is placed."""

    APRON = "apron"
    TANK_FARM = "tank farm"
    DOCKED = "docked"
    RIVER = "river"
    SEA = "sea"
    LAKE = "lake"
    PARKING_LOT = "parking lot"
    ROAD = "road"


@dataclass(frozen=True)
class Structure:
    """One mid-scale structure as the captions describe it."""

    kind: StructureKind
    centre: Point | None = None
    building_count: int | None = None
    roof_colour: str | None = None
    pier_count: int | None = None
    tank_slots: int | None = None

    def facts(self) -> dict[str, Any]:
        """The JSON record of the structure (its centre is a rendering detail, not a fact)."""
        record: dict[str, Any] = {"kind": self.kind.value}
        if self.building_count is not None:
            record["count"] = self.building_count
        if self.roof_colour is not None:
            record["colour"] = self.roof_colour
        if self.pier_count is not None:
            record["piers"] = self.pier_count
        if self.tank_slots is not None:
            record["slots"] = self.tank_slots
        return record


@dataclass
class Layout:
    """A rendered large layout with its mid-scale structures, shared by the siblings of a group.

    Besides the image it keeps where small objects may go (apron stands, parking stalls, road
    lines, berths, tank slots, open water), so that every sibling places its own objects.
    """

    size: int
    archetype: Archetype
    land_cover: LandCover
    image: Image.Image | None = None
    water_kind: WaterKind | None = None
    features: list[LinearFeature] = field(default_factory=list)
    structures: list[Structure] = field(default_factory=list)
    dense: bool = False
    sun: Point = (1.0, 1.0)  # direction shadows fall in
    water_mask: np.ndarray | None = None  # open water where ships may sail
    apron_spots: list[Pose] = field(default_factory=list)
    parking_spots: list[Pose] = field(default_factory=list)
    road_lines: list[RoadLine] = field(default_factory=list)
    dock_spots: list[Pose] = field(default_factory=list)
    tank_slots: list[Point] = field(default_factory=list)
    tank_radius: float = 0.0
    river_angle: float = 0.0

    @property
    def scale(self) -> float:
        """Lengths are designed at 224 px; this is the factor for the actual size."""
        return self.size / REFERENCE_SIZE

    def has_feature(self, feature: LinearFeature) -> bool:
        return feature in self.features

    def has_structure(self, kind: StructureKind) -> bool:
        return any(structure.kind == kind for structure in self.structures)


@dataclass(frozen=True)
class ObjectPlan:
    """What one sibling should show of one object kind: where, and one colour per object."""

    site: ObjectSite
    colours: list[str]


@dataclass(frozen=True)
class PlacedObjects:
    """The objects of one kind actually drawn (fewer than planned when space ran out)."""

    kind: ObjectKind
    site: ObjectSite
    colours: list[str]

    @property
    def count(self) -> int:
        return len(self.colours)

    def facts(self) -> dict[str, Any]:
        return {"count": self.count, "colours": list(self.colours), "where": self.site.value}


@dataclass
class SynthScene:
    """One generated image with its captions and the facts the captions were written from."""

    image: Image.Image
    captions: list[str]
    layout_id: int
    scene: dict[str, Any]


def choose(rng: np.random.Generator, options: list[T] | tuple[T, ...]) -> T:
    """One of ``options``, uniformly (one integer draw from ``rng``)."""
    return options[int(rng.integers(0, len(options)))]


def scene_facts(layout: Layout, objects: list[PlacedObjects]) -> dict[str, Any]:
    """The JSON record of a scene: what its captions were written from."""
    return {
        "archetype": layout.archetype.value,
        "land_cover": layout.land_cover.value,
        "features": [feature.value for feature in layout.features],
        "structures": [structure.facts() for structure in layout.structures],
        "objects": {placed.kind.value: placed.facts() for placed in objects},
    }

"""Small objects: which kinds a layout can host, each sibling's plan, and drawing them.

The siblings of a layout group differ only here: the group's primary kind keeps one site
and takes a distinct count per sibling, so the small objects are all that tells them apart.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .raster import rectangle, to_image_points
from .scene import Archetype, Layout, ObjectKind, ObjectPlan, ObjectSite, PlacedObjects, Point, Pose, WaterKind, choose
from .structures import draw_shadow

COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 232),
    "gray": (150, 152, 156),
    "red": (196, 48, 40),
    "blue": (44, 84, 186),
    "yellow": (226, 196, 52),
    "black": (34, 34, 38),
    "orange": (228, 124, 36),
    "green": (52, 130, 64),
}
# Colours each kind is painted in (repeats make a colour more likely).
OBJECT_COLOURS: dict[ObjectKind, list[str]] = {
    ObjectKind.PLANE: ["white", "white", "gray", "red", "blue"],
    ObjectKind.SHIP: ["white", "red", "blue", "black", "orange"],
    ObjectKind.CAR: ["white", "red", "blue", "black", "gray", "yellow"],
    ObjectKind.TANK: ["white", "white", "gray", "green"],
}
# Count ranges (inclusive) of each small object kind; siblings draw distinct counts.
COUNT_RANGE: dict[ObjectKind, tuple[int, int]] = {
    ObjectKind.PLANE: (1, 6),
    ObjectKind.SHIP: (1, 7),
    ObjectKind.CAR: (1, 16),
    ObjectKind.TANK: (2, 12),
}
# The kind a layout group is about, by archetype (car for the others).
PRIMARY_KIND: dict[Archetype, ObjectKind] = {
    Archetype.AIRPORT: ObjectKind.PLANE,
    Archetype.INDUSTRIAL: ObjectKind.TANK,
    Archetype.HARBOUR: ObjectKind.SHIP,
    Archetype.RIVER: ObjectKind.SHIP,
    Archetype.LAKE: ObjectKind.SHIP,
}
# Outlines in units of the object's length, nose along +x.
PLANE_OUTLINE: list[Point] = [
    (0.5, 0.0),
    (0.44, -0.05),
    (0.1, -0.06),
    (-0.1, -0.5),
    (-0.2, -0.5),
    (-0.1, -0.06),
    (-0.36, -0.05),
    (-0.46, -0.2),
    (-0.52, -0.2),
    (-0.48, 0.0),
    (-0.52, 0.2),
    (-0.46, 0.2),
    (-0.36, 0.05),
    (-0.1, 0.06),
    (-0.2, 0.5),
    (-0.1, 0.5),
    (0.1, 0.06),
    (0.44, 0.05),
]
SHIP_OUTLINE: list[Point] = [(0.5, 0.0), (0.3, -0.5), (-0.5, -0.5), (-0.5, 0.5), (0.3, 0.5)]
# Candidate positions tried for ships at sea and cars on roads.
SAILING_CANDIDATES = 300
DRIVING_CANDIDATES = 150


def draw_plane(draw: ImageDraw.ImageDraw, pose: Pose, length: float, colour: str, sun: Point, scale: float) -> None:
    x, y, angle = pose
    outline = to_image_points(PLANE_OUTLINE, x, y, angle, length)
    draw_shadow(draw, outline, sun, 2.5 * scale)
    draw.polygon(outline, fill=(*COLOURS[colour], 255), outline=(70, 70, 74, 255))


def draw_ship(draw: ImageDraw.ImageDraw, pose: Pose, length: float, colour: str, sailing: bool) -> None:
    """A hull with a deckhouse at the stern; a sailing ship draws a wake."""
    x, y, angle = pose
    width = length * 0.28
    if sailing:
        wake = to_image_points(
            [
                (-0.5 * length, -0.3 * width),
                (-1.6 * length, -1.0 * width),
                (-1.6 * length, 1.0 * width),
                (-0.5 * length, 0.3 * width),
            ],
            x,
            y,
            angle,
        )
        draw.polygon(wake, fill=(235, 240, 245, 55))
    hull = [(along * length, across * width) for along, across in SHIP_OUTLINE]
    draw.polygon(to_image_points(hull, x, y, angle), fill=(*COLOURS[colour], 255), outline=(30, 30, 30, 255))
    deck = [
        (-0.45 * length, -0.3 * width),
        (-0.2 * length, -0.3 * width),
        (-0.2 * length, 0.3 * width),
        (-0.45 * length, 0.3 * width),
    ]
    deck_colour = (230, 230, 226, 255) if colour != "white" else (120, 120, 124, 255)
    draw.polygon(to_image_points(deck, x, y, angle), fill=deck_colour)


def draw_car(draw: ImageDraw.ImageDraw, pose: Pose, colour: str, scale: float) -> None:
    x, y, angle = pose
    body = rectangle(x, y, 7.0 * scale, 3.4 * scale, angle)
    draw.polygon(body, fill=(*COLOURS[colour], 255), outline=(30, 30, 30, 160))
    windscreen_x, windscreen_y = x + 1.2 * scale * math.cos(angle), y + 1.2 * scale * math.sin(angle)
    draw.polygon(rectangle(windscreen_x, windscreen_y, 1.6 * scale, 2.6 * scale, angle), fill=(40, 44, 56, 200))


def draw_tank(draw: ImageDraw.ImageDraw, centre: Point, radius: float, colour: str, sun: Point, scale: float) -> None:
    x, y = centre
    shadow_x, shadow_y = sun[0] * 2.5 * scale, sun[1] * 2.5 * scale
    draw.ellipse(
        [x - radius + shadow_x, y - radius + shadow_y, x + radius + shadow_x, y + radius + shadow_y], fill=(0, 0, 0, 90)
    )
    rgb = COLOURS[colour]
    rim = (*(int(channel * 0.6) for channel in rgb), 255)
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(*rgb, 255), outline=rim)
    roof = radius * 0.55
    draw.ellipse([x - roof, y - roof, x + roof, y + roof], outline=(*(int(channel * 0.8) for channel in rgb), 255))


# ----------------------------------------------------------------------------- planning
def object_kinds(layout: Layout) -> list[ObjectKind]:
    """Small-object kinds the layout can host; the first is the group's primary kind."""
    kinds = []
    if layout.apron_spots:
        kinds.append(ObjectKind.PLANE)
    if layout.tank_slots:
        kinds.append(ObjectKind.TANK)
    if layout.dock_spots or (layout.water_mask is not None and layout.water_mask.any()):
        kinds.append(ObjectKind.SHIP)
    if layout.parking_spots or layout.road_lines:
        kinds.append(ObjectKind.CAR)
    primary = PRIMARY_KIND.get(layout.archetype, ObjectKind.CAR)
    if primary in kinds:
        kinds.remove(primary)
        kinds.insert(0, primary)
    return kinds


def capacity(layout: Layout, kind: ObjectKind, site: ObjectSite) -> int:
    """How many objects of ``kind`` fit at ``site`` in this layout."""
    scale = layout.scale
    if kind is ObjectKind.PLANE:
        return len(layout.apron_spots)
    if kind is ObjectKind.TANK:
        return len(layout.tank_slots)
    if site is ObjectSite.PARKING_LOT:
        return len(layout.parking_spots)
    if site is ObjectSite.DOCKED:
        return len(layout.dock_spots)
    if kind is ObjectKind.SHIP:  # sailing: leave room between hulls
        water = int(layout.water_mask.sum()) if layout.water_mask is not None else 0
        return int(water / (500 * scale * scale))
    return COUNT_RANGE[kind][1]


def sailing_site(water: WaterKind | None) -> ObjectSite:
    return ObjectSite(water.value) if water is not None else ObjectSite.SEA


def sites(layout: Layout, kind: ObjectKind) -> list[ObjectSite]:
    """Where objects of ``kind`` can be placed in this layout."""
    if kind is ObjectKind.PLANE:
        return [ObjectSite.APRON]
    if kind is ObjectKind.TANK:
        return [ObjectSite.TANK_FARM]
    if kind is ObjectKind.SHIP:
        found = [ObjectSite.DOCKED] if layout.dock_spots else []
        at_sea = sailing_site(layout.water_kind)
        if layout.water_mask is not None and capacity(layout, ObjectKind.SHIP, at_sea) >= 1:
            found.append(at_sea)
        return found
    found = [ObjectSite.PARKING_LOT] if layout.parking_spots else []
    return found + ([ObjectSite.ROAD] if layout.road_lines else [])


def plan_siblings(seed: int, group: int, layout: Layout, n_siblings: int) -> list[dict[ObjectKind, ObjectPlan]]:
    """Per-sibling object plans: distinct counts of the primary kind, fresh colours.

    The primary kind keeps one site for the whole group (so siblings differ only in how
    many objects and which colours); secondary kinds vary freely, including absent.
    """
    rng = np.random.default_rng([seed, group, 1])
    plans: list[dict[ObjectKind, ObjectPlan]] = [{} for _ in range(n_siblings)]
    rank = 0
    for kind in object_kinds(layout):
        options = sites(layout, kind)
        if not options:
            continue
        lowest, highest = COUNT_RANGE[kind]
        if rank == 0:
            site = choose(rng, options)
            top = max(1, min(highest, capacity(layout, kind, site)))
            values = rng.permutation(np.arange(min(lowest, top), top + 1))
            counts = np.concatenate([values] * (n_siblings // len(values) + 1))[:n_siblings]
            chosen_sites = [site] * n_siblings
        else:
            chosen_sites = [options[int(i)] for i in rng.integers(0, len(options), n_siblings)]
            counts = np.array(
                [rng.integers(0, max(1, min(highest, capacity(layout, kind, site))) + 1) for site in chosen_sites]
            )
        rank += 1
        palette = OBJECT_COLOURS[kind]
        for sibling in range(n_siblings):
            if rng.random() < 0.6:
                colours = [choose(rng, palette)] * int(counts[sibling])
            else:
                two = [palette[int(i)] for i in rng.choice(len(palette), 2, replace=False)]
                colours = [two[int(i)] for i in rng.integers(0, 2, int(counts[sibling]))]
            if colours:
                plans[sibling][kind] = ObjectPlan(chosen_sites[sibling], colours)
    return plans


# ----------------------------------------------------------------------------- placing
class Placement:
    """The small objects drawn so far on one sibling, so that new ones keep their distance."""

    def __init__(self, layout: Layout) -> None:
        assert layout.image is not None
        self.layout = layout
        self.image = layout.image.copy()
        self.draw = ImageDraw.Draw(self.image, "RGBA")
        self.taken: list[tuple[float, float, float]] = []  # x, y, clearance radius

    def clear(self, centre_x: float, centre_y: float, radius: float) -> bool:
        """Is a disc of ``radius`` at this centre clear of every object placed so far?"""
        return all(
            (centre_x - other_x) ** 2 + (centre_y - other_y) ** 2 > (radius + other_radius) ** 2
            for other_x, other_y, other_radius in self.taken
        )


def place_planes(rng: np.random.Generator, placement: Placement, colours: list[str]) -> list[str]:
    layout = placement.layout
    length = rng.uniform(19, 23) * layout.scale
    stands = sorted(rng.choice(len(layout.apron_spots), min(len(colours), len(layout.apron_spots)), replace=False))
    drawn = []
    for stand, colour in zip(stands, colours):
        x, y, angle = layout.apron_spots[int(stand)]
        draw_plane(placement.draw, (x, y, angle), length, colour, layout.sun, layout.scale)
        placement.taken.append((x, y, length / 2))
        drawn.append(colour)
    return drawn


def place_tanks(rng: np.random.Generator, placement: Placement, colours: list[str]) -> list[str]:
    layout = placement.layout
    slots = sorted(rng.choice(len(layout.tank_slots), min(len(colours), len(layout.tank_slots)), replace=False))
    drawn = []
    for slot, colour in zip(slots, colours):
        draw_tank(placement.draw, layout.tank_slots[int(slot)], layout.tank_radius, colour, layout.sun, layout.scale)
        drawn.append(colour)
    return drawn


def sailing_poses(rng: np.random.Generator, layout: Layout, length: float) -> list[Pose]:
    """Random poses on open water with bow and stern afloat (rivers: along the current)."""
    assert layout.water_mask is not None
    rows, columns = np.nonzero(layout.water_mask)
    if not len(rows):
        return []
    on_river = layout.water_kind is WaterKind.RIVER
    picks = rng.integers(0, len(rows), SAILING_CANDIDATES)
    heading = layout.river_angle if on_river else rng.uniform(0, 2 * np.pi)
    turn = rng.uniform(-0.15, 0.15, SAILING_CANDIDATES) if on_river else rng.uniform(-1.0, 1.0, SAILING_CANDIDATES)
    angles = heading + np.pi * (rng.random(SAILING_CANDIDATES) < 0.5) + turn
    centre_x, centre_y = columns[picks] + 0.5, rows[picks] + 0.5
    afloat = np.ones(SAILING_CANDIDATES, dtype=bool)
    for end in (-0.6, 0.6):  # bow and stern must be on open water
        end_x = (centre_x + end * length * np.cos(angles)).astype(np.int64)
        end_y = (centre_y + end * length * np.sin(angles)).astype(np.int64)
        inside = (end_x >= 0) & (end_x < layout.size) & (end_y >= 0) & (end_y < layout.size)
        afloat &= inside
        afloat[inside] &= layout.water_mask[end_y[inside], end_x[inside]]
    return [(float(centre_x[i]), float(centre_y[i]), float(angles[i])) for i in np.flatnonzero(afloat)]


def place_ships(rng: np.random.Generator, placement: Placement, site: ObjectSite, colours: list[str]) -> list[str]:
    layout = placement.layout
    length = rng.uniform(14, 20) * layout.scale
    if site is ObjectSite.DOCKED:
        candidates = [(layout.dock_spots[int(i)], False) for i in rng.permutation(len(layout.dock_spots))]
    else:
        candidates = [(pose, True) for pose in sailing_poses(rng, layout, length)]
    drawn: list[str] = []
    for (x, y, angle), sailing in candidates:
        if len(drawn) == len(colours):
            break
        if sailing and not placement.clear(x, y, length * 0.6):  # berths are spaced already
            continue
        colour = colours[len(drawn)]
        draw_ship(placement.draw, (x, y, angle), length, colour, sailing)
        placement.taken.append((x, y, length * 0.6))
        drawn.append(colour)
    return drawn


def driving_poses(rng: np.random.Generator, layout: Layout) -> list[Pose]:
    """Random poses in the lanes of the layout's roads, facing the way of their lane."""
    scale = layout.scale
    lines = np.array(layout.road_lines, dtype=np.float64)
    which = rng.integers(0, len(lines), DRIVING_CANDIDATES)
    point_x, point_y, road_angle, width = lines[which].T
    distance = rng.uniform(-0.7, 0.7, DRIVING_CANDIDATES) * layout.size
    lane = (width / 4) * np.where(rng.random(DRIVING_CANDIDATES) < 0.5, 1.0, -1.0)
    x = point_x + distance * np.cos(road_angle) - lane * np.sin(road_angle)
    y = point_y + distance * np.sin(road_angle) + lane * np.cos(road_angle)
    heading = road_angle + np.where(lane < 0, np.pi, 0.0)
    inside = (x > 5 * scale) & (x < layout.size - 5 * scale) & (y > 5 * scale) & (y < layout.size - 5 * scale)
    return [(float(x[i]), float(y[i]), float(heading[i])) for i in np.flatnonzero(inside)]


def place_cars(rng: np.random.Generator, placement: Placement, site: ObjectSite, colours: list[str]) -> list[str]:
    layout = placement.layout
    scale = layout.scale
    in_lot = site is ObjectSite.PARKING_LOT
    if in_lot:
        candidates = [layout.parking_spots[int(i)] for i in rng.permutation(len(layout.parking_spots))]
    else:
        candidates = driving_poses(rng, layout)
    drawn: list[str] = []
    for x, y, angle in candidates:
        if len(drawn) == len(colours):
            break
        if not in_lot and not placement.clear(x, y, 3.2 * scale):  # stalls are spaced already
            continue
        colour = colours[len(drawn)]
        draw_car(placement.draw, (x, y, angle), colour, scale)
        placement.taken.append((x, y, 3.2 * scale))
        drawn.append(colour)
    return drawn


def place_objects(
    rng: np.random.Generator, layout: Layout, plan: dict[ObjectKind, ObjectPlan]
) -> tuple[Image.Image, list[PlacedObjects]]:
    """Draw the planned small objects on a copy of the layout; return it and what was drawn."""
    placement = Placement(layout)
    placed: list[PlacedObjects] = []
    for kind, wanted in plan.items():
        if kind is ObjectKind.PLANE:
            drawn = place_planes(rng, placement, wanted.colours)
        elif kind is ObjectKind.TANK:
            drawn = place_tanks(rng, placement, wanted.colours)
        elif kind is ObjectKind.SHIP:
            drawn = place_ships(rng, placement, wanted.site, wanted.colours)
        else:
            drawn = place_cars(rng, placement, wanted.site, wanted.colours)
        if drawn:
            placed.append(PlacedObjects(kind, wanted.site, drawn))
    return placement.image, placed

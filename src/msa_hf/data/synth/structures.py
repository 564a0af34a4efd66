"""Mid-scale structures drawn with PIL: building blocks, parking lots, sports fields, tank farms, harbours.

A builder finds a free spot (within the area the layout allows and outside what is already
built), draws the structure, marks its footprint as blocked, records where small objects may
go later (parking stalls, tank slots, berths) and returns what the captions may say about it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from .raster import rectangle, rotated_frame, to_image_points
from .scene import SPORTS_FIELDS, Layout, Point, Structure, StructureKind, choose

RGBA = tuple[int, int, int, int]
WHITE_LINE: RGBA = (236, 236, 230, 255)
BUILDING_ROOFS = [(226, 226, 222), (184, 186, 190), (120, 130, 150), (170, 96, 76), (204, 196, 176)]
# How the captions name each roof colour of BUILDING_ROOFS (the block's main colour).
BUILDING_ROOF_NAMES = ["white", "gray", "blue", "red", "white"]
# Footprint (length, width) at 224 px of each sports field.
SPORTS_FIELD_SIZES = {
    StructureKind.BASEBALL_FIELD: (44, 44),
    StructureKind.FOOTBALL_FIELD: (56, 36),
    StructureKind.TENNIS_COURT: (30, 26),
    StructureKind.PLAYGROUND: (64, 40),
}


@dataclass
class BuildSite:
    """What a structure builder draws on and where it may build."""

    rng: np.random.Generator
    draw: ImageDraw.ImageDraw
    layout: Layout
    buildable: np.ndarray  # where the large layout allows structures
    blocked: np.ndarray  # footprints already taken (updated in place)
    angle: float  # the layout's grid angle: structures align with it

    def free(self) -> np.ndarray:
        return self.buildable & ~self.blocked


StructureBuilder = Callable[[BuildSite, Point | None], Structure | None]


def is_free(mask: np.ndarray, polygon: list[Point], size: int, samples: int = 5) -> bool:
    """Is the polygon's interior (sampled on a grid between its corners) free in ``mask``?"""
    corners = np.array(polygon, dtype=np.float32)
    if corners.min() < 1 or corners.max() > size - 1:
        return False
    origin, end_along, end_across = corners[0], corners[1], corners[3]
    steps = np.linspace(0.0, 1.0, samples, dtype=np.float32)
    points = origin + steps[:, None, None] * (end_along - origin) + steps[None, :, None] * (end_across - origin)
    columns = np.clip(points[..., 0].astype(np.int64), 0, size - 1)
    rows = np.clip(points[..., 1].astype(np.int64), 0, size - 1)
    return bool(mask[rows, columns].all())


def occupy(blocked: np.ndarray, polygon: list[Point], padding: float = 0.0) -> None:
    """Mark the polygon's bounding box (plus ``padding``) as taken."""
    corners = np.array(polygon, dtype=np.float32)
    x0, y0 = np.floor(corners.min(0) - padding).astype(int)
    x1, y1 = np.ceil(corners.max(0) + padding).astype(int)
    blocked[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True


def find_spot(
    rng: np.random.Generator,
    free: np.ndarray,
    size: int,
    length: float,
    width: float,
    angle: float,
    near: Point | None = None,
    tries: int = 60,
) -> Point | None:
    """A centre where the rotated rectangle fits in ``free``: first near ``near``, then anywhere."""
    for attempt in range(tries):
        if near is not None and attempt < tries // 2:
            centre_x = near[0] + rng.normal(0, 0.18 * size)
            centre_y = near[1] + rng.normal(0, 0.18 * size)
        else:
            centre_x, centre_y = rng.uniform(0.1, 0.9, 2) * size
        if is_free(free, rectangle(centre_x, centre_y, length, width, angle), size):
            return float(centre_x), float(centre_y)
    return None


def draw_shadow(draw: ImageDraw.ImageDraw, polygon: list[Point], sun: Point, height: float) -> None:
    """A translucent shadow of an object ``height`` pixels tall, cast along ``sun``."""
    draw.polygon([(x + sun[0] * height, y + sun[1] * height) for x, y in polygon], fill=(0, 0, 0, 90))


def building_block(site: BuildSite, near: Point | None = None) -> Structure | None:
    """Two to five buildings on a paved lot, mostly sharing one roof colour."""
    rng, draw, layout, angle = site.rng, site.draw, site.layout, site.angle
    scale = layout.scale
    n_buildings = int(rng.integers(2, 6))
    length, width = rng.uniform(44, 70) * scale, rng.uniform(26, 40) * scale
    spot = find_spot(rng, site.free(), layout.size, length, width, angle, near)
    if spot is None:
        return None
    centre_x, centre_y = spot
    draw.polygon(rectangle(centre_x, centre_y, length, width, angle), fill=(150, 150, 146, 255))
    columns = int(math.ceil(n_buildings / 2)) if n_buildings > 2 else n_buildings
    rows = int(math.ceil(n_buildings / columns))
    cell_length, cell_width = length / columns, width / rows
    main_roof = int(rng.integers(0, len(BUILDING_ROOFS)))
    for k in range(n_buildings):
        column, row = k % columns, k // columns
        building_length = cell_length * rng.uniform(0.6, 0.85)
        building_width = cell_width * rng.uniform(0.6, 0.85)
        offset_along = -length / 2 + cell_length * (column + 0.5)
        offset_across = -width / 2 + cell_width * (row + 0.5)
        building_x = centre_x + offset_along * math.cos(angle) - offset_across * math.sin(angle)
        building_y = centre_y + offset_along * math.sin(angle) + offset_across * math.cos(angle)
        footprint = rectangle(building_x, building_y, building_length, building_width, angle)
        draw_shadow(draw, footprint, layout.sun, rng.uniform(2, 4) * scale)
        roof = BUILDING_ROOFS[main_roof if rng.random() < 0.6 else int(rng.integers(0, len(BUILDING_ROOFS)))]
        draw.polygon(footprint, fill=(*roof, 255))
        draw.polygon(
            rectangle(building_x, building_y, building_length * 0.5, building_width * 0.4, angle),
            fill=(*(int(channel * 0.9) for channel in roof), 255),
        )
    occupy(site.blocked, rectangle(centre_x, centre_y, length, width, angle), 2 * scale)
    return Structure(
        StructureKind.BUILDINGS,
        centre=(centre_x, centre_y),
        building_count=n_buildings,
        roof_colour=BUILDING_ROOF_NAMES[main_roof],
    )


def parking_lot(site: BuildSite, near: Point | None = None) -> Structure | None:
    """Two facing rows of marked stalls; every stall is a spot for a car."""
    rng, draw, layout, angle = site.rng, site.draw, site.layout, site.angle
    scale = layout.scale
    stall_width, stall_depth = 5.0 * scale, 9.0 * scale
    n_stalls = int(rng.integers(6, 11))
    length = n_stalls * stall_width + 4 * scale
    width = 2 * stall_depth + 8 * scale
    spot = find_spot(rng, site.free(), layout.size, length, width, angle, near)
    if spot is None:
        return None
    centre_x, centre_y = spot
    draw.polygon(rectangle(centre_x, centre_y, length, width, angle), fill=(82, 84, 88, 255))
    cos, sin = math.cos(angle), math.sin(angle)
    for side in (-1, 1):
        row_centre = side * (width / 2 - 2 * scale - stall_depth / 2)
        for k in range(n_stalls + 1):
            line_along = -n_stalls * stall_width / 2 + k * stall_width
            line = [(line_along, row_centre - stall_depth / 2), (line_along, row_centre + stall_depth / 2)]
            draw.line(to_image_points(line, centre_x, centre_y, angle), fill=(220, 220, 214, 255), width=1)
        for k in range(n_stalls):
            stall_along = -n_stalls * stall_width / 2 + (k + 0.5) * stall_width
            layout.parking_spots.append(
                (
                    centre_x + stall_along * cos - row_centre * sin,
                    centre_y + stall_along * sin + row_centre * cos,
                    angle + np.pi / 2,
                )
            )
    occupy(site.blocked, rectangle(centre_x, centre_y, length, width, angle), 2 * scale)
    return Structure(StructureKind.PARKING_LOT, centre=(centre_x, centre_y))


def _football_field(draw: ImageDraw.ImageDraw, centre: Point, length: float, width: float, angle: float) -> None:
    centre_x, centre_y = centre
    outline = rectangle(centre_x, centre_y, length, width, angle)
    draw.polygon(outline, fill=(66, 140, 64, 255))
    for k in range(6):  # mowing stripes
        stripe_centre = to_image_points([(-length / 2 + length / 6 * (k + 0.5), 0)], centre_x, centre_y, angle)[0]
        draw.polygon(rectangle(*stripe_centre, length / 12, width, angle), fill=(78, 156, 72, 255))
    _pitch_lines(draw, centre, outline, width, angle)


def _playground(draw: ImageDraw.ImageDraw, centre: Point, length: float, width: float, scale: float) -> None:
    """A running track (always axis-aligned) around a pitch."""
    centre_x, centre_y = centre
    box = [centre_x - length / 2, centre_y - width / 2, centre_x + length / 2, centre_y + width / 2]
    draw.rounded_rectangle(box, radius=width / 2, fill=(176, 74, 60, 255))
    inner_length, inner_width = length - 12 * scale, width - 12 * scale
    draw.rounded_rectangle(
        [
            centre_x - inner_length / 2,
            centre_y - inner_width / 2,
            centre_x + inner_length / 2,
            centre_y + inner_width / 2,
        ],
        radius=inner_width / 2,
        fill=(74, 146, 70, 255),
    )
    pitch_width = inner_width * 0.8
    outline = rectangle(centre_x, centre_y, inner_length * 0.7, pitch_width, 0.0)
    _pitch_lines(draw, centre, outline, pitch_width, 0.0)


def _pitch_lines(
    draw: ImageDraw.ImageDraw, centre: Point, outline: list[Point], pitch_width: float, angle: float
) -> None:
    """Touch lines, the halfway line and the centre circle."""
    centre_x, centre_y = centre
    draw.line([*outline, outline[0]], fill=WHITE_LINE, width=1)
    halfway = [(0, -pitch_width / 2), (0, pitch_width / 2)]
    draw.line(to_image_points(halfway, centre_x, centre_y, angle), fill=WHITE_LINE, width=1)
    radius = pitch_width * 0.18
    draw.ellipse([centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius], outline=WHITE_LINE)


def _tennis_courts(draw: ImageDraw.ImageDraw, centre: Point, length: float, width: float, angle: float) -> None:
    centre_x, centre_y = centre
    draw.polygon(rectangle(centre_x, centre_y, length, width, angle), fill=(58, 120, 96, 255))
    for side in (-1, 1):
        court_centre = to_image_points([(0, side * width / 4)], centre_x, centre_y, angle)[0]
        court = rectangle(*court_centre, length * 0.8, width * 0.4, angle)
        draw.polygon(court, fill=(60, 96, 160, 255), outline=WHITE_LINE)


def _baseball_field(
    draw: ImageDraw.ImageDraw, centre: Point, length: float, width: float, angle: float, scale: float
) -> None:
    """An outfield quarter circle with the infield diamond at its apex."""
    centre_x, centre_y = centre
    box = [centre_x - length / 2, centre_y - width / 2, centre_x + length / 2, centre_y + width / 2]
    start = math.degrees(angle) % 360
    draw.pieslice(
        [box[0] - length / 2, box[1] - width / 2, box[2] + length / 2, box[3] + width / 2],
        start,
        start + 90,
        fill=(84, 150, 70, 255),
    )
    base = 9 * scale
    diamond = to_image_points([(0, 0), (base, 0), (base, base), (0, base)], centre_x, centre_y, angle)
    draw.polygon(diamond, fill=(176, 130, 90, 255), outline=WHITE_LINE)


def sports_field(site: BuildSite, near: Point | None = None) -> Structure | None:
    """A baseball field, football field, pair of tennis courts or playground (running track)."""
    rng, draw, layout, angle = site.rng, site.draw, site.layout, site.angle
    scale = layout.scale
    kind = choose(rng, SPORTS_FIELDS)
    design_length, design_width = SPORTS_FIELD_SIZES[kind]
    length, width = design_length * scale, design_width * scale
    spot = find_spot(rng, site.free(), layout.size, length, width, angle, near)
    if spot is None:
        return None
    if kind is StructureKind.FOOTBALL_FIELD:
        _football_field(draw, spot, length, width, angle)
    elif kind is StructureKind.PLAYGROUND:
        _playground(draw, spot, length, width, scale)
        angle = 0.0
    elif kind is StructureKind.TENNIS_COURT:
        _tennis_courts(draw, spot, length, width, angle)
    else:
        _baseball_field(draw, spot, length, width, angle, scale)
        length = width = 2 * max(length, width)  # the outfield reaches beyond the footprint
    occupy(site.blocked, rectangle(*spot, length, width, angle), 2 * scale)
    return Structure(kind, centre=spot)


def tank_farm(site: BuildSite, near: Point | None = None) -> Structure | None:
    """A walled yard with a grid of round tank foundations; each is a slot for a storage tank."""
    rng, draw, layout, angle = site.rng, site.draw, site.layout, site.angle
    scale = layout.scale
    radius = rng.uniform(5.0, 7.5) * scale
    columns, rows = int(rng.integers(3, 5)), int(rng.integers(2, 4))
    pitch = 2.7 * radius
    length, width = columns * pitch + 4 * scale, rows * pitch + 4 * scale
    spot = find_spot(rng, site.free(), layout.size, length, width, angle, near)
    if spot is None:
        return None
    centre_x, centre_y = spot
    draw.polygon(
        rectangle(centre_x, centre_y, length, width, angle), fill=(176, 170, 152, 255), outline=(120, 116, 100, 255)
    )
    cos, sin = math.cos(angle), math.sin(angle)
    for row in range(rows):
        for column in range(columns):
            slot_along = -length / 2 + 2 * scale + pitch * (column + 0.5)
            slot_across = -width / 2 + 2 * scale + pitch * (row + 0.5)
            x = centre_x + slot_along * cos - slot_across * sin
            y = centre_y + slot_along * sin + slot_across * cos
            draw.ellipse([x - radius - 1, y - radius - 1, x + radius + 1, y + radius + 1], fill=(154, 148, 132, 255))
            layout.tank_slots.append((x, y))
    layout.tank_radius = radius
    occupy(site.blocked, rectangle(centre_x, centre_y, length, width, angle), 2 * scale)
    return Structure(StructureKind.TANK_FARM, centre=(centre_x, centre_y), tank_slots=rows * columns)


def harbour(site: BuildSite, coast_offset: float) -> Structure:
    """A quay along the coast and piers into the sea, with berths on both sides of each pier."""
    rng, draw, layout, angle = site.rng, site.draw, site.layout, site.angle
    size, scale = layout.size, layout.scale
    n_piers = int(rng.integers(2, 5))
    pier_length = rng.uniform(34, 52) * scale
    pier_width = 5 * scale
    span = rng.uniform(90, 150) * scale
    centre_along = rng.uniform(-25, 25) * scale
    cos, sin = math.cos(angle), math.sin(angle)

    def to_xy(along: float, across: float) -> Point:
        return (size / 2 + along * cos - across * sin, size / 2 + along * sin + across * cos)

    quay = to_image_points(
        [
            (centre_along - span / 2, coast_offset - 6 * scale),
            (centre_along + span / 2, coast_offset - 6 * scale),
            (centre_along + span / 2, coast_offset + 4 * scale),
            (centre_along - span / 2, coast_offset + 4 * scale),
        ],
        size / 2,
        size / 2,
        angle,
    )
    draw.polygon(quay, fill=(168, 166, 160, 255))
    for k in range(n_piers):
        pier_along = centre_along - span / 2 + span / n_piers * (k + 0.5)
        pier = to_image_points(
            [
                (pier_along - pier_width / 2, coast_offset),
                (pier_along + pier_width / 2, coast_offset),
                (pier_along + pier_width / 2, coast_offset + pier_length),
                (pier_along - pier_width / 2, coast_offset + pier_length),
            ],
            size / 2,
            size / 2,
            angle,
        )
        draw.polygon(pier, fill=(178, 176, 170, 255), outline=(120, 120, 116, 255))
        for side in (-1, 1):
            for distance in np.arange(10 * scale, pier_length - 4 * scale, 18 * scale):
                x, y = to_xy(pier_along + side * (pier_width / 2 + 3.5 * scale), coast_offset + distance + 6 * scale)
                if 4 < x < size - 4 and 4 < y < size - 4:
                    layout.dock_spots.append((x, y, angle + np.pi / 2))
    # keep sailing ships away from the harbour
    along, across = rotated_frame(size, size / 2, size / 2, angle)
    near_harbour = (np.abs(along - centre_along) < span / 2 + 14 * scale) & (
        across < coast_offset + pier_length + 14 * scale
    )
    if layout.water_mask is not None:
        layout.water_mask = layout.water_mask & ~near_harbour
    occupy(site.blocked, quay, 3 * scale)
    return Structure(StructureKind.HARBOUR, pier_count=n_piers)

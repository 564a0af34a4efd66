"""The large layout painted on a float canvas: land-cover textures, water and roads.

Each function takes the layout's random generator and draws from it in a fixed order, which
is what makes a seed reproduce the same scene.
"""

from __future__ import annotations

import numpy as np

from .raster import blend, pixel_centres, rotated_frame, value_noise
from .scene import LandCover, Layout, LinearFeature, Point, WaterKind

FIELD_PALETTE = np.array(
    [
        (86, 128, 58),
        (110, 146, 66),
        (132, 158, 80),
        (176, 168, 104),
        (150, 122, 86),
        (174, 152, 112),
        (70, 108, 52),
        (154, 160, 92),
    ],
    dtype=np.float32,
)
ROOF_PALETTE = np.array(
    [(168, 84, 66), (140, 70, 60), (120, 120, 126), (186, 170, 150), (96, 100, 116), (200, 200, 196)], np.float32
)
# Field cuts per axis of the farmland grid (fields are indexed by the cut on each axis).
FIELD_CUTS = 40
# Size of the lookup table that gives each house a stable random draw.
HOUSE_TABLE = 997


def farmland(rng: np.random.Generator, size: int, scale: float, small_fields: bool) -> np.ndarray:
    """A rotated patchwork of fields with furrows and field margins."""
    angle = rng.uniform(-0.6, 0.6)
    along, across = rotated_frame(size, size / 2, size / 2, angle)
    span = size * 0.75
    step = (14, 30) if small_fields else (28, 60)
    along_cuts = np.cumsum(rng.uniform(*step, FIELD_CUTS) * scale) - span
    across_cuts = np.cumsum(rng.uniform(*step, FIELD_CUTS) * scale) - span
    field_along, field_across = np.searchsorted(along_cuts, along), np.searchsorted(across_cuts, across)
    field_id = field_along * (FIELD_CUTS + 1) + field_across
    n_fields = (FIELD_CUTS + 1) ** 2
    colours = FIELD_PALETTE[rng.integers(0, len(FIELD_PALETTE), n_fields)] + rng.normal(0, 6, (n_fields, 3)).astype(
        np.float32
    )
    furrows_along = rng.random(n_fields) < 0.5
    period = rng.uniform(2.5, 4.5, n_fields).astype(np.float32) * max(scale, 0.5)
    canvas = colours[field_id]
    furrow_axis = np.where(furrows_along[field_id], along, across)
    canvas *= (1.0 + 0.08 * np.sin(2 * np.pi * furrow_axis / period[field_id]))[..., None]
    last = FIELD_CUTS - 1
    to_cut_along = np.minimum(
        np.abs(along - along_cuts[np.clip(field_along - 1, 0, last)]),
        np.abs(along_cuts[np.clip(field_along, 0, last)] - along),
    )
    to_cut_across = np.minimum(
        np.abs(across - across_cuts[np.clip(field_across - 1, 0, last)]),
        np.abs(across_cuts[np.clip(field_across, 0, last)] - across),
    )
    blend(canvas, np.minimum(to_cut_along, to_cut_across) < 0.9 * scale, (122, 110, 84), 0.7)
    return canvas


def forest(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Tree crowns of varying brightness with darker gaps."""
    crowns = value_noise(rng, size, max(4, int(size / (3.2 * scale))))
    patches = value_noise(rng, size, 5)
    base = np.array((38, 78, 42), dtype=np.float32)
    canvas = np.broadcast_to(base, (size, size, 3)).copy()
    canvas *= (0.55 + 0.75 * crowns)[..., None]
    canvas[..., 1] += 18 * (patches - 0.5)
    blend(canvas, crowns < 0.2, (20, 40, 26), 0.8)
    return canvas


def desert(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Sand with warped dune ripples."""
    angle = rng.uniform(0, np.pi)
    along, _ = rotated_frame(size, 0, 0, angle)
    warp = value_noise(rng, size, 4) * 30 * scale
    period = rng.uniform(8, 14) * scale
    canvas = np.broadcast_to(np.array((206, 182, 136), np.float32), (size, size, 3)).copy()
    canvas *= (1.0 + 0.07 * np.sin(2 * np.pi * (along + warp) / period))[..., None]
    return canvas


def grassland(rng: np.random.Generator, size: int) -> np.ndarray:
    """Green grass with dry patches."""
    canvas = np.broadcast_to(np.array((118, 146, 78), np.float32), (size, size, 3)).copy()
    patch = value_noise(rng, size, 7)
    canvas *= (0.85 + 0.3 * patch)[..., None]
    blend(canvas, value_noise(rng, size, 9) > 0.72, (150, 150, 96), 0.5)
    return canvas


def residential(rng: np.random.Generator, size: int, scale: float, dense: bool) -> np.ndarray:
    """A street grid with blocks of gabled houses (dense: packed; sparse: lawns and trees)."""
    angle = rng.uniform(-0.5, 0.5) + (np.pi / 2 if rng.random() < 0.5 else 0)
    along, across = rotated_frame(size, rng.uniform(0, size), rng.uniform(0, size), angle)
    street = (5.0 if dense else 4.0) * scale
    block_length = (rng.uniform(32, 42) if dense else rng.uniform(48, 62)) * scale
    block_width = (rng.uniform(24, 32) if dense else rng.uniform(40, 52)) * scale
    in_block_along, in_block_across = np.mod(along, block_length), np.mod(across, block_width)
    block_along, block_across = np.floor(along / block_length), np.floor(across / block_width)
    is_street = (in_block_along < street) | (in_block_across < street)
    lawn = np.array((92, 128, 70) if not dense else (120, 124, 110), np.float32)
    canvas = np.broadcast_to(lawn, (size, size, 3)).copy()
    house_length = (block_length - street) / (3 if dense else 2)
    house_width = (block_width - street) / 2
    house_along = np.floor((in_block_along - street) / house_length)
    house_across = np.floor((in_block_across - street) / house_width)
    in_plot_along = np.mod(in_block_along - street, house_length)
    in_plot_across = np.mod(in_block_across - street, house_width)
    margin = (1.2 if dense else 3.5) * scale
    in_house = (
        (~is_street)
        & (in_plot_along > margin)
        & (in_plot_along < house_length - margin)
        & (in_plot_across > margin)
        & (in_plot_across < house_width - margin)
    )
    house_key = (
        block_along.astype(np.int64) * 7919
        + block_across.astype(np.int64) * 104729
        + house_along.astype(np.int64) * 31
        + house_across.astype(np.int64) * 17
    ) % HOUSE_TABLE
    occupied = rng.random(HOUSE_TABLE)
    if not dense:
        in_house &= occupied[house_key] < 0.55
    roof = ROOF_PALETTE[(rng.permutation(HOUSE_TABLE)[house_key]) % len(ROOF_PALETTE)]
    gable = np.where((in_plot_across / house_width) < 0.5, 1.08, 0.86).astype(np.float32)
    blend(canvas, in_house, roof * gable[..., None])
    shadow_offset = 1.5 * scale
    shadow = (
        (~is_street)
        & ~in_house
        & (in_plot_along > margin + shadow_offset)
        & (in_plot_along < house_length - margin + shadow_offset)
        & (in_plot_across > margin + shadow_offset)
        & (in_plot_across < house_width - margin + shadow_offset)
    )
    if not dense:
        shadow &= occupied[house_key] < 0.55
        trees = (value_noise(rng, size, int(size / (6 * scale)) + 1) > 0.7) & ~in_house & ~is_street
        blend(canvas, trees, (46, 84, 46), 0.85)
    blend(canvas, shadow, (40, 40, 40), 0.5)
    blend(canvas, is_street, (118, 118, 114))
    return canvas


def land_cover(rng: np.random.Generator, size: int, cover: LandCover, scale: float, small_fields: bool) -> np.ndarray:
    """The background of a scene: a texture under smooth lighting and per-pixel grain."""
    grain = rng.normal(0.0, 4.0, (size, size, 1)).astype(np.float32)
    light = 0.88 + 0.24 * value_noise(rng, size, 3)[..., None]
    if cover is LandCover.FARMLAND:
        canvas = farmland(rng, size, scale, small_fields)
    elif cover is LandCover.FOREST:
        canvas = forest(rng, size, scale)
    elif cover is LandCover.DESERT:
        canvas = desert(rng, size, scale)
        grain = grain * 1.5
    elif cover is LandCover.GRASSLAND:
        canvas = grassland(rng, size)
    else:
        canvas = residential(rng, size, scale, dense=cover is LandCover.DENSE_RESIDENTIAL)
        light = 0.95 + 0.1 * (light - 0.88) / 0.24  # houses carry their own shading
    return canvas * light + grain


def water_colour(rng: np.random.Generator, kind: WaterKind) -> np.ndarray:
    """Rivers are greener and murkier than the sea and lakes."""
    if kind is WaterKind.RIVER:
        base = [(64, 96, 96), (52, 86, 112), (84, 104, 88)][rng.integers(0, 3)]
    else:
        base = [(36, 78, 118), (30, 92, 126), (44, 70, 104)][rng.integers(0, 3)]
    return np.array(base, np.float32)


def river(rng: np.random.Generator, canvas: np.ndarray, layout: Layout) -> np.ndarray:
    """A meandering river with banks; returns the open water away from the banks."""
    size, scale = layout.size, layout.scale
    angle = rng.uniform(0, np.pi)
    along, across = rotated_frame(
        size, size / 2 + rng.uniform(-30, 30) * scale, size / 2 + rng.uniform(-30, 30) * scale, angle
    )
    amplitude, wavelength = rng.uniform(8, 24) * scale, rng.uniform(120, 220) * scale
    ripple_amplitude, ripple_wavelength = rng.uniform(2, 6) * scale, rng.uniform(40, 70) * scale
    centre_line = amplitude * np.sin(2 * np.pi * along / wavelength + rng.uniform(0, 6.3)) + ripple_amplitude * np.sin(
        2 * np.pi * along / ripple_wavelength + rng.uniform(0, 6.3)
    )
    width = rng.uniform(16, 30) * scale * (1 + 0.15 * np.sin(2 * np.pi * along / (90 * scale)))
    distance = np.abs(across - centre_line)
    water = distance < width / 2
    bank = (distance >= width / 2) & (distance < width / 2 + 2.5 * scale)
    blend(canvas, bank, (150, 140, 104), 0.8)
    colour = water_colour(rng, WaterKind.RIVER)
    depth = np.clip(1 - distance / (width / 2 + 1e-3), 0, 1)
    blend(canvas, water, colour * (1.05 - 0.12 * depth)[..., None])
    layout.river_angle = angle
    layout.features.append(LinearFeature.RIVER)
    layout.water_kind = WaterKind.RIVER
    return distance < width / 2 - 4 * scale


def coast(rng: np.random.Generator, canvas: np.ndarray, layout: Layout) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Sea on one side of a wavy coastline with a beach.

    Returns the open sea, the coast's angle, its offset from the image centre (across the
    angle) and every pixel's signed distance from the coastline (positive at sea).
    """
    size, scale = layout.size, layout.scale
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(-0.2, 0.25) * size
    along, across = rotated_frame(size, size / 2, size / 2, angle)
    wiggle = 5 * scale * np.sin(
        2 * np.pi * along / (rng.uniform(80, 160) * scale) + rng.uniform(0, 6.3)
    ) + 8 * scale * (value_noise(rng, size, 3) - 0.5)
    distance = across - offset - wiggle  # > 0 is sea
    colour = water_colour(rng, WaterKind.SEA)
    depth = np.clip(distance / (60 * scale), 0, 1)
    sea = distance > 0
    blend(canvas, (distance > -4 * scale) & ~sea, (214, 200, 160), 0.9)
    blend(canvas, sea, colour * (1.25 - 0.3 * depth)[..., None])
    layout.features.append(LinearFeature.COASTLINE)
    layout.water_kind = WaterKind.SEA
    return distance > 6 * scale, angle, offset, distance


def lake(rng: np.random.Generator, canvas: np.ndarray, layout: Layout) -> np.ndarray:
    """An irregular lake near the centre with a shore; returns its open water."""
    size = layout.size
    x, y = pixel_centres(size)
    centre_x, centre_y = rng.uniform(0.35, 0.65, 2) * size
    radius = np.hypot((x - centre_x) / rng.uniform(0.8, 1.2), (y - centre_y)) / size
    level_field = radius + 0.18 * (value_noise(rng, size, 3) - 0.5)
    level = rng.uniform(0.24, 0.34)
    water = level_field < level
    shore = (level_field >= level) & (level_field < level + 0.02)
    blend(canvas, shore, (160, 150, 110), 0.7)
    blend(
        canvas,
        water,
        water_colour(rng, WaterKind.LAKE) * (1.1 - 0.5 * np.clip(level - level_field, 0, 0.3))[..., None],
    )
    layout.features.append(LinearFeature.LAKE)
    layout.water_kind = WaterKind.LAKE
    return level_field < level - 0.04


def road(
    rng: np.random.Generator,
    canvas: np.ndarray,
    layout: Layout,
    angle: float | None = None,
    through: Point | None = None,
) -> np.ndarray:
    """A straight road with a dashed centre line; returns the strip structures must avoid."""
    size, scale = layout.size, layout.scale
    if angle is None:
        angle = rng.uniform(0, np.pi)
    point_x, point_y = through if through is not None else tuple(rng.uniform(0.3, 0.7, 2) * size)
    along, across = rotated_frame(size, point_x, point_y, angle)
    width = rng.uniform(7, 10) * scale
    surface = np.abs(across) < width / 2
    blend(canvas, np.abs(across) < width / 2 + 1.2 * scale, (170, 168, 160), 0.6)
    blend(canvas, surface, (92, 92, 96))
    dash = (np.abs(across) < 0.6 * max(scale, 0.6)) & (np.mod(along, 10 * scale) < 5 * scale)
    blend(canvas, dash, (230, 230, 220), 0.9)
    layout.road_lines.append((point_x, point_y, angle, width))
    return np.abs(across) < width / 2 + 3 * scale

"""``rs-synth``: a procedurally generated multi-scale aerial caption corpus.

Why it exists: nobody reaches the Hub from here and a newcomer has no RS corpus yet, yet the
whole pipeline (training, evaluation, the quick start) needs image-caption pairs. The scenes
are built to exercise what MSA is about, content at several scales:

* **large layout** - land cover (farmland, forest, desert, grassland, water, dense or sparse
  residential) plus rivers, coastlines, lakes, roads and runways;
* **mid-scale structures** - building blocks, parking lots, sports fields, tank farms, harbours;
* **small objects with counts and colours** - planes, ships, cars, storage tanks.

Scenes come in *layout groups*: the siblings of a group share the same rendered large layout
and mid-scale structures and differ only in their small objects (how many, which colours,
where), and a whole group always lands in the same split. So captions such as "three white
planes are parked beside the runway" versus "five planes ..." can only be told apart at the
finest scale; the coarsest scale alone cannot solve retrieval.

Determinism: every random draw comes from ``numpy.random.default_rng`` seeded with
``[seed, group or image index, stream]`` and PNGs are written with fixed settings and no
metadata, so the same arguments give byte-identical files. Image ``i``'s pixels and captions
depend only on ``(seed, i, image_size, variants_per_layout)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..io_utils import atomic_directory

__all__ = [
    "SYNTH_JSON_NAME",
    "SYNTH_DATASET_NAME",
    "SynthScene",
    "render_scene",
    "generate_synth_corpus",
    "ensure_synth_corpus",
]

SYNTH_DATASET_NAME = "rs-synth"
SYNTH_JSON_NAME = "dataset_rs_synth.json"
GENERATOR_VERSION = 1
CAPTIONS_PER_IMAGE = 5
PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~3x faster than 6 on these textured images, <2% larger

# ----------------------------------------------------------------------------- palettes
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
OBJECT_COLOURS = {
    "plane": ["white", "white", "gray", "red", "blue"],
    "ship": ["white", "red", "blue", "black", "orange"],
    "car": ["white", "red", "blue", "black", "gray", "yellow"],
    "tank": ["white", "white", "gray", "green"],
}
# Count ranges (inclusive) of each small object kind; siblings draw distinct counts.
COUNT_RANGE = {"plane": (1, 6), "ship": (1, 7), "car": (1, 16), "tank": (2, 12)}

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

ARCHETYPES: dict[str, dict[str, Any]] = {
    # land covers, weight
    "airport": {"land": ["farmland", "grassland", "desert"], "weight": 3},
    "harbour": {"land": ["dense_residential", "sparse_residential", "desert", "forest", "grassland"], "weight": 3},
    "river": {
        "land": ["farmland", "forest", "desert", "dense_residential", "sparse_residential", "grassland"],
        "weight": 3,
    },
    "residential": {"land": ["dense_residential", "sparse_residential"], "weight": 3},
    "industrial": {"land": ["desert", "grassland", "farmland", "sparse_residential"], "weight": 2},
    "rural": {"land": ["farmland", "forest", "desert", "grassland"], "weight": 2},
    "lake": {"land": ["forest", "farmland", "grassland", "sparse_residential"], "weight": 2},
}


# ----------------------------------------------------------------------------- geometry
_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), cached per image size."""
    if size not in _GRID_CACHE:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        _GRID_CACHE[size] = (x + 0.5, y + 0.5)
    return _GRID_CACHE[size]


def _rotated(size: int, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u along ``angle``, v across it) relative to (cx, cy)."""
    x, y = _grid(size)
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    return dx * c + dy * s, -dx * s + dy * c


def _poly(
    points: Sequence[tuple[float, float]], cx: float, cy: float, angle: float, scale: float = 1.0
) -> list[tuple[float, float]]:
    """Local (u, v) polygon -> image coordinates."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + scale * (u * c - v * s), cy + scale * (u * s + v * c)) for u, v in points]


def _rect(cx: float, cy: float, length: float, width: float, angle: float) -> list[tuple[float, float]]:
    h, w = length / 2, width / 2
    return _poly([(-h, -w), (h, -w), (h, w), (-h, w)], cx, cy, angle)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Smooth (smoothstep-bilinear) upsampling of a coarse random grid to ``size``x``size``."""
    n0, n1 = grid.shape
    gy = np.linspace(0, n0 - 1.001, size, dtype=np.float32)
    gx = np.linspace(0, n1 - 1.001, size, dtype=np.float32)
    y0, x0 = gy.astype(np.int64), gx.astype(np.int64)
    fy, fx = gy - y0, gx - x0
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    top = a + (b - a) * fx
    bottom = c + (d - c) * fx
    return (top + (bottom - top) * fy[:, None]).astype(np.float32)


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1] with about ``cells`` features across the image."""
    return _upsample(rng.random((cells + 2, cells + 2), dtype=np.float32), size)


def _mix(img: np.ndarray, mask: np.ndarray, colour: Any, alpha: float | np.ndarray = 1.0) -> None:
    """In place: ``img[mask] = lerp(img, colour, alpha)``; colour and alpha may be per pixel."""
    colour = np.asarray(colour, dtype=np.float32)
    target = colour[mask] if colour.ndim == 3 else colour
    if np.ndim(alpha) == 0:
        if alpha == 1.0:
            img[mask] = target
            return
        weight: Any = np.float32(alpha)
    else:
        weight = np.asarray(alpha, dtype=np.float32)[mask][:, None]
    pixels = img[mask]
    img[mask] = pixels + (target - pixels) * weight


# ----------------------------------------------------------------------------- scene model
@dataclass
class _Layout:
    """A rendered large layout + mid-scale structures, shared by the siblings of a group."""

    size: int
    archetype: str
    land_cover: str
    image: Image.Image
    water_kind: str | None = None  # "river" | "sea" | "lake"
    features: list[str] = field(
        default_factory=list
    )  # "river", "coastline", "lake", "road", "two roads", "runway", "bridge"
    structures: list[dict[str, Any]] = field(default_factory=list)
    dense: bool = False
    sun: tuple[float, float] = (1.0, 1.0)
    water_mask: np.ndarray | None = None  # open water where ships may sail
    apron_spots: list[tuple[float, float, float]] = field(default_factory=list)
    parking_spots: list[tuple[float, float, float]] = field(default_factory=list)
    road_lines: list[tuple[float, float, float, float]] = field(default_factory=list)  # (px, py, angle, width)
    dock_spots: list[tuple[float, float, float]] = field(default_factory=list)
    tank_slots: list[tuple[float, float]] = field(default_factory=list)
    tank_radius: float = 0.0
    river_angle: float = 0.0


@dataclass
class SynthScene:
    """One generated image with its captions and the facts the captions were written from."""

    image: Image.Image
    captions: list[str]
    layout_id: int
    scene: dict[str, Any]


# ----------------------------------------------------------------------------- land cover
def _land_cover(rng: np.random.Generator, size: int, kind: str, f: float, dense: bool) -> np.ndarray:
    grain = rng.normal(0.0, 4.0, (size, size, 1)).astype(np.float32)
    light = 0.88 + 0.24 * _noise(rng, size, 3)[..., None]
    if kind == "farmland":
        angle = rng.uniform(-0.6, 0.6)
        u, v = _rotated(size, size / 2, size / 2, angle)
        span = size * 0.75
        step = (14, 30) if dense else (28, 60)
        ucuts = np.cumsum(rng.uniform(*step, 40) * f) - span
        vcuts = np.cumsum(rng.uniform(*step, 40) * f) - span
        fu, fv = np.searchsorted(ucuts, u), np.searchsorted(vcuts, v)
        fid = fu * 41 + fv
        palette = np.array(
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
        n_fields = 41 * 41
        colours = palette[rng.integers(0, len(palette), n_fields)] + rng.normal(0, 6, (n_fields, 3)).astype(np.float32)
        orient = rng.random(n_fields) < 0.5
        period = rng.uniform(2.5, 4.5, n_fields).astype(np.float32) * max(f, 0.5)
        img = colours[fid]
        along = np.where(orient[fid], u, v)
        img *= (1.0 + 0.08 * np.sin(2 * np.pi * along / period[fid]))[..., None]
        du = np.minimum(np.abs(u - ucuts[np.clip(fu - 1, 0, 39)]), np.abs(ucuts[np.clip(fu, 0, 39)] - u))
        dv = np.minimum(np.abs(v - vcuts[np.clip(fv - 1, 0, 39)]), np.abs(vcuts[np.clip(fv, 0, 39)] - v))
        _mix(img, np.minimum(du, dv) < 0.9 * f, (122, 110, 84), 0.7)
    elif kind == "forest":
        crowns = _noise(rng, size, max(4, int(size / (3.2 * f))))
        patches = _noise(rng, size, 5)
        base = np.array((38, 78, 42), dtype=np.float32)
        img = np.broadcast_to(base, (size, size, 3)).copy()
        img *= (0.55 + 0.75 * crowns)[..., None]
        img[..., 1] += 18 * (patches - 0.5)
        _mix(img, crowns < 0.2, (20, 40, 26), 0.8)
    elif kind == "desert":
        angle = rng.uniform(0, np.pi)
        u, _ = _rotated(size, 0, 0, angle)
        warp = _noise(rng, size, 4) * 30 * f
        period = rng.uniform(8, 14) * f
        img = np.broadcast_to(np.array((206, 182, 136), np.float32), (size, size, 3)).copy()
        img *= (1.0 + 0.07 * np.sin(2 * np.pi * (u + warp) / period))[..., None]
        grain = grain * 1.5
    elif kind == "grassland":
        img = np.broadcast_to(np.array((118, 146, 78), np.float32), (size, size, 3)).copy()
        patch = _noise(rng, size, 7)
        img *= (0.85 + 0.3 * patch)[..., None]
        _mix(img, _noise(rng, size, 9) > 0.72, (150, 150, 96), 0.5)
    elif kind in ("dense_residential", "sparse_residential"):
        img = _residential(rng, size, f, dense=kind == "dense_residential")
        light = 0.95 + 0.1 * (light - 0.88) / 0.24
    else:  # pragma: no cover - guarded by ARCHETYPES
        raise ValueError(kind)
    return img * light + grain


def _residential(rng: np.random.Generator, size: int, f: float, dense: bool) -> np.ndarray:
    angle = rng.uniform(-0.5, 0.5) + (np.pi / 2 if rng.random() < 0.5 else 0)
    u, v = _rotated(size, rng.uniform(0, size), rng.uniform(0, size), angle)
    street = (5.0 if dense else 4.0) * f
    bu_len = (rng.uniform(32, 42) if dense else rng.uniform(48, 62)) * f
    bv_len = (rng.uniform(24, 32) if dense else rng.uniform(40, 52)) * f
    ru, rv = np.mod(u, bu_len), np.mod(v, bv_len)
    bu, bv = np.floor(u / bu_len), np.floor(v / bv_len)
    is_street = (ru < street) | (rv < street)
    lawn = np.array((92, 128, 70) if not dense else (120, 124, 110), np.float32)
    img = np.broadcast_to(lawn, (size, size, 3)).copy()
    house_u = (bu_len - street) / (3 if dense else 2)
    house_v = (bv_len - street) / 2
    hu = np.floor((ru - street) / house_u)
    hv = np.floor((rv - street) / house_v)
    pu = np.mod(ru - street, house_u)
    pv = np.mod(rv - street, house_v)
    margin = (1.2 if dense else 3.5) * f
    in_house = (~is_street) & (pu > margin) & (pu < house_u - margin) & (pv > margin) & (pv < house_v - margin)
    key = (
        bu.astype(np.int64) * 7919 + bv.astype(np.int64) * 104729 + hu.astype(np.int64) * 31 + hv.astype(np.int64) * 17
    ) % 997
    table = rng.random(997)
    if not dense:
        in_house &= table[key] < 0.55
    roofs = np.array(
        [(168, 84, 66), (140, 70, 60), (120, 120, 126), (186, 170, 150), (96, 100, 116), (200, 200, 196)], np.float32
    )
    roof = roofs[(rng.permutation(997)[key]) % len(roofs)]
    gable = np.where((pv / house_v) < 0.5, 1.08, 0.86).astype(np.float32)
    _mix(img, in_house, roof * gable[..., None])
    shadow = (
        (~is_street)
        & ~in_house
        & (pu > margin + 1.5 * f)
        & (pu < house_u - margin + 1.5 * f)
        & (pv > margin + 1.5 * f)
        & (pv < house_v - margin + 1.5 * f)
    )
    if not dense:
        shadow &= table[key] < 0.55
        trees = (_noise(rng, size, int(size / (6 * f)) + 1) > 0.7) & ~in_house & ~is_street
        _mix(img, trees, (46, 84, 46), 0.85)
    _mix(img, shadow, (40, 40, 40), 0.5)
    _mix(img, is_street, (118, 118, 114))
    return img


# ----------------------------------------------------------------------------- linear features
def _water_colour(rng: np.random.Generator, kind: str) -> np.ndarray:
    if kind == "river":
        base = [(64, 96, 96), (52, 86, 112), (84, 104, 88)][rng.integers(0, 3)]
    else:
        base = [(36, 78, 118), (30, 92, 126), (44, 70, 104)][rng.integers(0, 3)]
    return np.array(base, np.float32)


def _river(rng: np.random.Generator, img: np.ndarray, lay: _Layout, f: float) -> np.ndarray:
    size = lay.size
    angle = rng.uniform(0, np.pi)
    u, v = _rotated(size, size / 2 + rng.uniform(-30, 30) * f, size / 2 + rng.uniform(-30, 30) * f, angle)
    amp1, lam1 = rng.uniform(8, 24) * f, rng.uniform(120, 220) * f
    amp2, lam2 = rng.uniform(2, 6) * f, rng.uniform(40, 70) * f
    centre = amp1 * np.sin(2 * np.pi * u / lam1 + rng.uniform(0, 6.3)) + amp2 * np.sin(
        2 * np.pi * u / lam2 + rng.uniform(0, 6.3)
    )
    width = rng.uniform(16, 30) * f * (1 + 0.15 * np.sin(2 * np.pi * u / (90 * f)))
    d = np.abs(v - centre)
    water = d < width / 2
    bank = (d >= width / 2) & (d < width / 2 + 2.5 * f)
    _mix(img, bank, (150, 140, 104), 0.8)
    colour = _water_colour(rng, "river")
    depth = np.clip(1 - d / (width / 2 + 1e-3), 0, 1)
    _mix(img, water, colour * (1.05 - 0.12 * depth)[..., None])
    lay.river_angle = angle
    lay.features.append("river")
    lay.water_kind = "river"
    return d < width / 2 - 4 * f


def _coast(rng: np.random.Generator, img: np.ndarray, lay: _Layout, f: float) -> tuple[np.ndarray, float, float, Any]:
    size = lay.size
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(-0.2, 0.25) * size
    u, v = _rotated(size, size / 2, size / 2, angle)
    wiggle = 5 * f * np.sin(2 * np.pi * u / (rng.uniform(80, 160) * f) + rng.uniform(0, 6.3)) + 8 * f * (
        _noise(rng, size, 3) - 0.5
    )
    d = v - offset - wiggle  # > 0 is sea
    colour = _water_colour(rng, "sea")
    depth = np.clip(d / (60 * f), 0, 1)
    sea = d > 0
    _mix(img, (d > -4 * f) & ~sea, (214, 200, 160), 0.9)
    _mix(img, sea, colour * (1.25 - 0.3 * depth)[..., None])
    lay.features.append("coastline")
    lay.water_kind = "sea"
    return d > 6 * f, angle, offset, d


def _lake(rng: np.random.Generator, img: np.ndarray, lay: _Layout, f: float) -> np.ndarray:
    size = lay.size
    x, y = _grid(size)
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    r = np.hypot((x - cx) / rng.uniform(0.8, 1.2), (y - cy)) / size
    field_ = r + 0.18 * (_noise(rng, size, 3) - 0.5)
    level = rng.uniform(0.24, 0.34)
    lake = field_ < level
    shore = (field_ >= level) & (field_ < level + 0.02)
    _mix(img, shore, (160, 150, 110), 0.7)
    _mix(img, lake, _water_colour(rng, "lake") * (1.1 - 0.5 * np.clip(level - field_, 0, 0.3))[..., None])
    lay.features.append("lake")
    lay.water_kind = "lake"
    return field_ < level - 0.04


def _road(
    rng: np.random.Generator,
    img: np.ndarray,
    lay: _Layout,
    f: float,
    angle: float | None = None,
    through: tuple[float, float] | None = None,
) -> np.ndarray:
    size = lay.size
    if angle is None:
        angle = rng.uniform(0, np.pi)
    px, py = through if through is not None else tuple(rng.uniform(0.3, 0.7, 2) * size)
    u, v = _rotated(size, px, py, angle)
    width = rng.uniform(7, 10) * f
    road = np.abs(v) < width / 2
    _mix(img, np.abs(v) < width / 2 + 1.2 * f, (170, 168, 160), 0.6)
    _mix(img, road, (92, 92, 96))
    dash = (np.abs(v) < 0.6 * max(f, 0.6)) & (np.mod(u, 10 * f) < 5 * f)
    _mix(img, dash, (230, 230, 220), 0.9)
    lay.road_lines.append((px, py, angle, width))
    return np.abs(v) < width / 2 + 3 * f


# ----------------------------------------------------------------------------- structures (PIL)
def _free(mask: np.ndarray, poly: list[tuple[float, float]], size: int, samples: int = 5) -> bool:
    """Is the polygon's interior (sampled on a grid between its corners) free in ``mask``?"""
    p = np.array(poly, dtype=np.float32)
    if p.min() < 1 or p.max() > size - 1:
        return False
    a, b, d = p[0], p[1], p[3]
    t = np.linspace(0.0, 1.0, samples, dtype=np.float32)
    pts = a + t[:, None, None] * (b - a) + t[None, :, None] * (d - a)
    ix = np.clip(pts[..., 0].astype(np.int64), 0, size - 1)
    iy = np.clip(pts[..., 1].astype(np.int64), 0, size - 1)
    return bool(mask[iy, ix].all())


def _occupy(blocked: np.ndarray, poly: list[tuple[float, float]], pad: float = 0.0) -> None:
    p = np.array(poly, dtype=np.float32)
    x0, y0 = np.floor(p.min(0) - pad).astype(int)
    x1, y1 = np.ceil(p.max(0) + pad).astype(int)
    blocked[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True


def _place(
    rng: np.random.Generator,
    free: np.ndarray,
    size: int,
    length: float,
    width: float,
    angle: float,
    near: tuple[float, float] | None = None,
    tries: int = 60,
) -> tuple[float, float] | None:
    for attempt in range(tries):
        if near is not None and attempt < tries // 2:
            cx = near[0] + rng.normal(0, 0.18 * size)
            cy = near[1] + rng.normal(0, 0.18 * size)
        else:
            cx, cy = rng.uniform(0.1, 0.9, 2) * size
        if _free(free, _rect(cx, cy, length, width, angle), size):
            return float(cx), float(cy)
    return None


def _shadow(
    draw: ImageDraw.ImageDraw, poly: list[tuple[float, float]], sun: tuple[float, float], height: float
) -> None:
    draw.polygon([(x + sun[0] * height, y + sun[1] * height) for x, y in poly], fill=(0, 0, 0, 90))


def _building_block(rng, draw, lay, free, blocked, f, angle, near=None) -> dict[str, Any] | None:
    n = int(rng.integers(2, 6))
    length, width = rng.uniform(44, 70) * f, rng.uniform(26, 40) * f
    spot = _place(rng, free, lay.size, length, width, angle, near)
    if spot is None:
        return None
    cx, cy = spot
    draw.polygon(_rect(cx, cy, length, width, angle), fill=(150, 150, 146, 255))
    roofs = [(226, 226, 222), (184, 186, 190), (120, 130, 150), (170, 96, 76), (204, 196, 176)]
    cols = int(math.ceil(n / 2)) if n > 2 else n
    rows = int(math.ceil(n / cols))
    cell_l, cell_w = length / cols, width / rows
    roof_idx = int(rng.integers(0, len(roofs)))
    for k in range(n):
        i, j = k % cols, k // cols
        bl = cell_l * rng.uniform(0.6, 0.85)
        bw = cell_w * rng.uniform(0.6, 0.85)
        ox = -length / 2 + cell_l * (i + 0.5)
        oy = -width / 2 + cell_w * (j + 0.5)
        bx = cx + ox * math.cos(angle) - oy * math.sin(angle)
        by = cy + ox * math.sin(angle) + oy * math.cos(angle)
        poly = _rect(bx, by, bl, bw, angle)
        _shadow(draw, poly, lay.sun, rng.uniform(2, 4) * f)
        roof = roofs[roof_idx if rng.random() < 0.6 else int(rng.integers(0, len(roofs)))]
        draw.polygon(poly, fill=roof + (255,))
        draw.polygon(_rect(bx, by, bl * 0.5, bw * 0.4, angle), fill=tuple(int(c * 0.9) for c in roof) + (255,))
    colour_name = {0: "white", 1: "gray", 2: "blue", 3: "red", 4: "white"}[roof_idx]
    poly = _rect(cx, cy, length, width, angle)
    _occupy(blocked, poly, 2 * f)
    return {"kind": "buildings", "count": n, "colour": colour_name, "centre": (cx, cy)}


def _parking_lot(rng, draw, lay, free, blocked, f, angle, near=None) -> dict[str, Any] | None:
    stall_w, stall_d = 5.0 * f, 9.0 * f
    n_stalls = int(rng.integers(6, 11))
    length = n_stalls * stall_w + 4 * f
    width = 2 * stall_d + 8 * f
    spot = _place(rng, free, lay.size, length, width, angle, near)
    if spot is None:
        return None
    cx, cy = spot
    draw.polygon(_rect(cx, cy, length, width, angle), fill=(82, 84, 88, 255))
    c, s = math.cos(angle), math.sin(angle)
    for _row, sign in enumerate((-1, 1)):
        vc = sign * (width / 2 - 2 * f - stall_d / 2)
        for k in range(n_stalls + 1):
            uu = -n_stalls * stall_w / 2 + k * stall_w
            p0 = (uu, vc - stall_d / 2)
            p1 = (uu, vc + stall_d / 2)
            draw.line(_poly([p0, p1], cx, cy, angle), fill=(220, 220, 214, 255), width=1)
        for k in range(n_stalls):
            uu = -n_stalls * stall_w / 2 + (k + 0.5) * stall_w
            lay.parking_spots.append((cx + uu * c - vc * s, cy + uu * s + vc * c, angle + np.pi / 2))
    poly = _rect(cx, cy, length, width, angle)
    _occupy(blocked, poly, 2 * f)
    return {"kind": "parking lot", "centre": (cx, cy)}


def _sports_field(rng, draw, lay, free, blocked, f, angle, near=None) -> dict[str, Any] | None:
    kind = ["baseball field", "football field", "tennis court", "playground"][int(rng.integers(0, 4))]
    dims = {"baseball field": (44, 44), "football field": (56, 36), "tennis court": (30, 26), "playground": (64, 40)}[
        kind
    ]
    length, width = dims[0] * f, dims[1] * f
    spot = _place(rng, free, lay.size, length, width, angle, near)
    if spot is None:
        return None
    cx, cy = spot
    white = (236, 236, 230, 255)
    if kind == "football field" or kind == "playground":
        if kind == "playground":
            box = [cx - length / 2, cy - width / 2, cx + length / 2, cy + width / 2]
            draw.rounded_rectangle(box, radius=width / 2, fill=(176, 74, 60, 255))
            inner_l, inner_w = length - 12 * f, width - 12 * f
            draw.rounded_rectangle(
                [cx - inner_l / 2, cy - inner_w / 2, cx + inner_l / 2, cy + inner_w / 2],
                radius=inner_w / 2,
                fill=(74, 146, 70, 255),
            )
            fl, fw = inner_l * 0.7, inner_w * 0.8
            rect = _rect(cx, cy, fl, fw, 0.0)
        else:
            fl, fw = length, width
            rect = _rect(cx, cy, fl, fw, angle)
            draw.polygon(rect, fill=(66, 140, 64, 255))
            for k in range(6):
                draw.polygon(
                    _rect(*_poly([(-fl / 2 + fl / 6 * (k + 0.5), 0)], cx, cy, angle)[0], fl / 12, fw, angle),
                    fill=(78, 156, 72, 255),
                )
        draw.line(rect + [rect[0]], fill=white, width=1)
        a = 0.0 if kind == "playground" else angle
        draw.line(_poly([(0, -fw / 2), (0, fw / 2)], cx, cy, a), fill=white, width=1)
        r = fw * 0.18
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=white)
        if kind == "playground":
            angle = 0.0
    elif kind == "tennis court":
        draw.polygon(_rect(cx, cy, length, width, angle), fill=(58, 120, 96, 255))
        for k in (-1, 1):
            court = _rect(*_poly([(0, k * width / 4)], cx, cy, angle)[0], length * 0.8, width * 0.4, angle)
            draw.polygon(court, fill=(60, 96, 160, 255), outline=white)
    else:  # baseball
        box = [cx - length / 2, cy - width / 2, cx + length / 2, cy + width / 2]
        start = math.degrees(angle) % 360
        draw.pieslice(
            [box[0] - length / 2, box[1] - width / 2, box[2] + length / 2, box[3] + width / 2],
            start,
            start + 90,
            fill=(84, 150, 70, 255),
        )
        d = 9 * f  # infield diamond with home plate at the pie's apex
        diamond = _poly([(0, 0), (d, 0), (d, d), (0, d)], cx, cy, angle)
        draw.polygon(diamond, fill=(176, 130, 90, 255), outline=white)
        length = width = 2 * max(length, width)
    poly = _rect(cx, cy, length, width, angle)
    _occupy(blocked, poly, 2 * f)
    return {"kind": kind, "centre": (cx, cy)}


def _tank_farm(rng, draw, lay, free, blocked, f, angle, near=None) -> dict[str, Any] | None:
    r = rng.uniform(5.0, 7.5) * f
    cols, rows = int(rng.integers(3, 5)), int(rng.integers(2, 4))
    pitch = 2.7 * r
    length, width = cols * pitch + 4 * f, rows * pitch + 4 * f
    spot = _place(rng, free, lay.size, length, width, angle, near)
    if spot is None:
        return None
    cx, cy = spot
    draw.polygon(_rect(cx, cy, length, width, angle), fill=(176, 170, 152, 255), outline=(120, 116, 100, 255))
    c, s = math.cos(angle), math.sin(angle)
    for j in range(rows):
        for i in range(cols):
            uu = -length / 2 + 2 * f + pitch * (i + 0.5)
            vv = -width / 2 + 2 * f + pitch * (j + 0.5)
            x, y = cx + uu * c - vv * s, cy + uu * s + vv * c
            draw.ellipse([x - r - 1, y - r - 1, x + r + 1, y + r + 1], fill=(154, 148, 132, 255))
            lay.tank_slots.append((x, y))
    lay.tank_radius = r
    _occupy(blocked, _rect(cx, cy, length, width, angle), 2 * f)
    return {"kind": "tank farm", "centre": (cx, cy), "slots": rows * cols}


# ----------------------------------------------------------------------------- layout
def _layout(seed: int, group: int, size: int) -> _Layout:
    rng = np.random.default_rng([seed, group, 0])
    f = size / 224.0
    names = list(ARCHETYPES)
    weights = np.array([ARCHETYPES[n]["weight"] for n in names], dtype=np.float64)
    archetype = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    land = ARCHETYPES[archetype]["land"][int(rng.integers(0, len(ARCHETYPES[archetype]["land"])))]
    dense = bool(rng.random() < 0.5)
    sun_angle = rng.uniform(0, 2 * np.pi)
    lay = _Layout(
        size=size,
        archetype=archetype,
        land_cover=land,
        image=None,
        dense=dense,  # type: ignore[arg-type]
        sun=(math.cos(sun_angle), math.sin(sun_angle)),
    )
    img = _land_cover(rng, size, land, f, dense)
    land_ok = np.ones((size, size), dtype=bool)  # where mid-scale structures may go
    grid_angle = float(rng.uniform(-0.4, 0.4))
    runway = None

    if archetype == "airport":
        angle = float(rng.uniform(0, np.pi))
        px, py = rng.uniform(0.4, 0.6, 2) * size
        u, v = _rotated(size, px, py, angle)
        rw = rng.uniform(15, 19) * f
        side = 1.0 if rng.random() < 0.5 else -1.0
        taxi = side * (rw / 2 + 14 * f)
        apron_v0, apron_v1 = taxi + side * 5 * f, taxi + side * 38 * f
        apron_u = rng.uniform(-30, 30) * f
        apron_len = rng.uniform(110, 150) * f
        vv = v * side
        apron = (
            (vv > min(abs(apron_v0), abs(apron_v1)) - 0.1)
            & (vv < max(abs(apron_v0), abs(apron_v1)))
            & (np.abs(u - apron_u) < apron_len / 2)
        )
        _mix(img, apron, (160, 160, 154))
        _mix(img, np.abs(v - taxi) < 3 * f, (130, 130, 126))
        _mix(img, np.abs(v - taxi) < 0.5 * max(f, 0.6), (214, 186, 60), 0.8)
        for k in (-1, 1):  # connectors runway <-> taxiway
            _mix(
                img, (np.abs(u - apron_u - k * apron_len * 0.3) < 3 * f) & (vv > 0) & (vv < abs(taxi)), (130, 130, 126)
            )
        _mix(img, np.abs(v) < rw / 2 + 2 * f, (190, 180, 150), 0.5)
        _mix(img, np.abs(v) < rw / 2, (172, 172, 166))
        _mix(img, (np.abs(v) < 0.7 * max(f, 0.6)) & (np.mod(u, 16 * f) < 8 * f), (244, 244, 240))
        _mix(img, (np.abs(np.abs(v) - rw / 2 + 1.2 * f) < 0.5 * max(f, 0.6)), (230, 230, 226), 0.7)
        lay.features.append("runway")
        land_ok &= ~((vv > -rw) & (vv < abs(apron_v1) + 4 * f) & (np.abs(u - apron_u) < apron_len / 2 + 6 * f))
        land_ok &= ~(np.abs(v) < rw)
        # planes park in a row on the apron, noses towards the taxiway
        n_spots = int(apron_len // (26 * f))
        vc = side * (abs(apron_v0) + abs(apron_v1)) / 2
        c, s = math.cos(angle), math.sin(angle)
        for k in range(n_spots):
            uu = apron_u - apron_len / 2 + apron_len / n_spots * (k + 0.5)
            lay.apron_spots.append((px + uu * c - vc * s, py + uu * s + vc * c, angle - side * np.pi / 2))
        runway = (px, py, angle, side, apron_u, vc)
        grid_angle = angle
    elif archetype == "harbour":
        sea, coast_angle, offset, dist = _coast(rng, img, lay, f)
        land_ok &= dist < -6 * f
        lay.water_mask = sea
        grid_angle = coast_angle
    elif archetype == "river":
        lay.water_mask = _river(rng, img, lay, f)
        land_ok &= ~_dilate_mask(lay.water_mask, 8)
        grid_angle = lay.river_angle
    elif archetype == "lake":
        lay.water_mask = _lake(rng, img, lay, f)
        land_ok &= ~_dilate_mask(lay.water_mask, 10)
    roads = 0
    if archetype in ("residential", "industrial", "rural") or (
        archetype in ("river", "harbour", "lake") and rng.random() < 0.5
    ):
        roads = 2 if (archetype in ("rural", "residential") and rng.random() < 0.35) else 1
    blocked_road = np.zeros((size, size), dtype=bool)
    for k in range(roads):
        if archetype == "river" and k == 0:
            angle = lay.river_angle + np.pi / 2 + rng.uniform(-0.4, 0.4)
            blocked_road |= _road(rng, img, lay, f, angle=angle, through=(size / 2, size / 2))
            lay.features.append("bridge")
        elif archetype == "harbour":
            blocked_road |= _road(
                rng, img, lay, f, angle=grid_angle, through=_coast_point(size, grid_angle, offset - 22 * f)
            )
        else:
            angle = grid_angle + (np.pi / 2 if k == 1 else 0.0) + (rng.uniform(-0.2, 0.2) if k == 0 else 0.0)
            blocked_road |= _road(rng, img, lay, f, angle=angle)
    if roads:
        lay.features.append("two roads" if roads == 2 else "road")
    land_ok &= ~blocked_road
    if lay.water_mask is not None and archetype != "harbour":
        land_ok &= ~_dilate_mask(lay.water_mask, 4)

    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil, "RGBA")
    blocked = np.zeros((size, size), dtype=bool)

    def free_now() -> np.ndarray:
        return land_ok & ~blocked

    wanted: list[tuple[Callable[..., Any], Any]] = []
    if archetype == "airport":
        if rng.random() < 0.75:
            near = _offset_point(runway, size, 58 * f)
            wanted.append((_building_block, near))
        if rng.random() < 0.6:
            wanted.append((_parking_lot, "previous"))
    elif archetype == "harbour":
        _harbour(rng, draw, lay, f, grid_angle, offset, blocked)
        if rng.random() < 0.45:
            wanted.append((_tank_farm, None))
        if rng.random() < 0.6:
            wanted.append((_building_block, None))
    elif archetype == "residential":
        wanted += [(_building_block, None), (_parking_lot, "previous")]
        if rng.random() < 0.7:
            wanted.append((_sports_field, None))
    elif archetype == "industrial":
        wanted.append((_tank_farm, None))
        if rng.random() < 0.7:
            wanted.append((_building_block, None))
        if rng.random() < 0.5:
            wanted.append((_parking_lot, "previous"))
    elif archetype == "river":
        if rng.random() < 0.5:
            wanted.append((_building_block, None))
        if rng.random() < 0.35:
            wanted.append((_parking_lot, "previous"))
        if land.endswith("residential") and rng.random() < 0.4:
            wanted.append((_sports_field, None))
    elif archetype == "rural":
        if rng.random() < 0.5:
            wanted.append((_building_block, None))
        if rng.random() < 0.3:
            wanted.append((_parking_lot, "previous"))
    elif archetype == "lake" and rng.random() < 0.35:
        wanted.append((_building_block, None))
    previous = None
    for builder, near in wanted:
        if near == "previous":
            near = previous["centre"] if previous else None
        result = builder(rng, draw, lay, free_now(), blocked, f, grid_angle, near)
        if result is not None:
            lay.structures.append(result)
            previous = result
    lay.image = pil
    return lay


def _offset_point(runway: tuple | None, size: int, dist: float) -> tuple[float, float] | None:
    if runway is None:
        return None
    px, py, angle, side, apron_u, vc = runway
    vv = vc + side * dist
    c, s = math.cos(angle), math.sin(angle)
    return (px + apron_u * c - vv * s, py + apron_u * s + vv * c)


def _coast_point(size: int, angle: float, v: float) -> tuple[float, float]:
    return (size / 2 - v * math.sin(angle), size / 2 + v * math.cos(angle))


def _dilate_mask(mask: np.ndarray, r: int) -> np.ndarray:
    """Cheap square dilation by ``r`` pixels (shifted ORs)."""
    out = mask.copy()
    step = 1
    while step <= r:
        grown = out.copy()
        grown[step:] |= out[:-step]
        grown[:-step] |= out[step:]
        grown[:, step:] |= out[:, :-step]
        grown[:, :-step] |= out[:, step:]
        out = grown
        step *= 2
    return out


def _harbour(rng, draw, lay: _Layout, f: float, angle: float, offset: float, blocked: np.ndarray) -> None:
    """Quay along the coast and piers into the sea; berths on both sides of each pier."""
    size = lay.size
    n_piers = int(rng.integers(2, 5))
    pier_len = rng.uniform(34, 52) * f
    pier_w = 5 * f
    span = rng.uniform(90, 150) * f
    centre_u = rng.uniform(-25, 25) * f
    c, s = math.cos(angle), math.sin(angle)

    def to_xy(uu: float, vv: float) -> tuple[float, float]:
        return (size / 2 + uu * c - vv * s, size / 2 + uu * s + vv * c)

    quay = _poly(
        [
            (centre_u - span / 2, offset - 6 * f),
            (centre_u + span / 2, offset - 6 * f),
            (centre_u + span / 2, offset + 4 * f),
            (centre_u - span / 2, offset + 4 * f),
        ],
        size / 2,
        size / 2,
        angle,
    )
    draw.polygon(quay, fill=(168, 166, 160, 255))
    for k in range(n_piers):
        uu = centre_u - span / 2 + span / n_piers * (k + 0.5)
        pier = _poly(
            [
                (uu - pier_w / 2, offset),
                (uu + pier_w / 2, offset),
                (uu + pier_w / 2, offset + pier_len),
                (uu - pier_w / 2, offset + pier_len),
            ],
            size / 2,
            size / 2,
            angle,
        )
        draw.polygon(pier, fill=(178, 176, 170, 255), outline=(120, 120, 116, 255))
        for side in (-1, 1):
            for t in np.arange(10 * f, pier_len - 4 * f, 18 * f):
                x, y = to_xy(uu + side * (pier_w / 2 + 3.5 * f), offset + t + 6 * f)
                if 4 < x < size - 4 and 4 < y < size - 4:
                    lay.dock_spots.append((x, y, angle + np.pi / 2))
    # keep sailing ships away from the harbour
    u, v = _rotated(size, size / 2, size / 2, angle)
    near_harbour = (np.abs(u - centre_u) < span / 2 + 14 * f) & (v < offset + pier_len + 14 * f)
    if lay.water_mask is not None:
        lay.water_mask = lay.water_mask & ~near_harbour
    _occupy(blocked, quay, 3 * f)
    lay.structures.append({"kind": "harbour", "piers": n_piers})


# ----------------------------------------------------------------------------- small objects
PLANE = [
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
SHIP = [(0.5, 0.0), (0.3, -0.5), (-0.5, -0.5), (-0.5, 0.5), (0.3, 0.5)]


def _draw_plane(draw, x, y, angle, length, colour, sun, f) -> None:
    poly = _poly(PLANE, x, y, angle, length)
    _shadow(draw, poly, sun, 2.5 * f)
    draw.polygon(poly, fill=COLOURS[colour] + (255,), outline=(70, 70, 74, 255))


def _draw_ship(draw, x, y, angle, length, colour, sailing, f) -> None:
    width = length * 0.28
    if sailing:
        wake = _poly(
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
    hull = [(u * length, v * width) for u, v in SHIP]
    draw.polygon(_poly(hull, x, y, angle), fill=COLOURS[colour] + (255,), outline=(30, 30, 30, 255))
    deck = [
        (-0.45 * length, -0.3 * width),
        (-0.2 * length, -0.3 * width),
        (-0.2 * length, 0.3 * width),
        (-0.45 * length, 0.3 * width),
    ]
    deck_colour = (230, 230, 226, 255) if colour != "white" else (120, 120, 124, 255)
    draw.polygon(_poly(deck, x, y, angle), fill=deck_colour)


def _draw_car(draw, x, y, angle, colour, f) -> None:
    body = _rect(x, y, 7.0 * f, 3.4 * f, angle)
    draw.polygon(body, fill=COLOURS[colour] + (255,), outline=(30, 30, 30, 160))
    wx, wy = x + 1.2 * f * math.cos(angle), y + 1.2 * f * math.sin(angle)
    draw.polygon(_rect(wx, wy, 1.6 * f, 2.6 * f, angle), fill=(40, 44, 56, 200))


def _draw_tank(draw, x, y, r, colour, sun, f) -> None:
    dx, dy = sun[0] * 2.5 * f, sun[1] * 2.5 * f
    draw.ellipse([x - r + dx, y - r + dy, x + r + dx, y + r + dy], fill=(0, 0, 0, 90))
    rgb = COLOURS[colour]
    draw.ellipse([x - r, y - r, x + r, y + r], fill=rgb + (255,), outline=tuple(int(c * 0.6) for c in rgb) + (255,))
    ri = r * 0.55
    draw.ellipse([x - ri, y - ri, x + ri, y + ri], outline=tuple(int(c * 0.8) for c in rgb) + (255,))


def _object_kinds(lay: _Layout) -> list[str]:
    """Small-object kinds the layout can host; the first is the group's primary kind."""
    kinds = []
    if lay.apron_spots:
        kinds.append("plane")
    if lay.tank_slots:
        kinds.append("tank")
    if lay.dock_spots or (lay.water_mask is not None and lay.water_mask.any()):
        kinds.append("ship")
    if lay.parking_spots or lay.road_lines:
        kinds.append("car")
    order = {"airport": "plane", "industrial": "tank", "harbour": "ship", "river": "ship", "lake": "ship"}
    primary = order.get(lay.archetype, "car")
    if primary in kinds:
        kinds.remove(primary)
        kinds.insert(0, primary)
    return kinds


def _capacity(lay: _Layout, kind: str, where: str) -> int:
    """How many objects of ``kind`` fit at ``where`` in this layout."""
    f = lay.size / 224.0
    if kind == "plane":
        return len(lay.apron_spots)
    if kind == "tank":
        return len(lay.tank_slots)
    if where == "parking lot":
        return len(lay.parking_spots)
    if where == "docked":
        return len(lay.dock_spots)
    if kind == "ship":  # sailing: leave room between hulls
        water = int(lay.water_mask.sum()) if lay.water_mask is not None else 0
        return int(water / (500 * f * f))
    return COUNT_RANGE[kind][1]


def _locations(lay: _Layout, kind: str) -> list[str]:
    if kind == "plane":
        return ["apron"]
    if kind == "tank":
        return ["tank farm"]
    if kind == "ship":
        out = ["docked"] if lay.dock_spots else []
        if lay.water_mask is not None and _capacity(lay, "ship", "sailing") >= 1:
            out.append(lay.water_kind or "sea")
        return out
    out = ["parking lot"] if lay.parking_spots else []
    return out + (["road"] if lay.road_lines else [])


def _variants(seed: int, group: int, lay: _Layout, n: int) -> list[dict[str, dict[str, Any]]]:
    """Per-sibling object plans: distinct counts of the primary kind, fresh colours.

    The primary kind keeps one location for the whole group (so siblings differ only in
    how many objects and which colours); secondary kinds vary freely, including absent.
    """
    rng = np.random.default_rng([seed, group, 1])
    plans: list[dict[str, dict[str, Any]]] = [dict() for _ in range(n)]
    rank = 0
    for kind in _object_kinds(lay):
        locations = _locations(lay, kind)
        if not locations:
            continue
        lo, hi = COUNT_RANGE[kind]
        if rank == 0:
            where = locations[int(rng.integers(0, len(locations)))]
            top = max(1, min(hi, _capacity(lay, kind, where)))
            values = rng.permutation(np.arange(min(lo, top), top + 1))
            counts = np.concatenate([values] * (n // len(values) + 1))[:n]
            wheres = [where] * n
        else:
            wheres = [locations[int(i)] for i in rng.integers(0, len(locations), n)]
            counts = np.array([rng.integers(0, max(1, min(hi, _capacity(lay, kind, w))) + 1) for w in wheres])
        rank += 1
        palette = OBJECT_COLOURS[kind]
        for j in range(n):
            if rng.random() < 0.6:
                colours = [palette[int(rng.integers(0, len(palette)))]] * int(counts[j])
            else:
                two = [palette[int(i)] for i in rng.choice(len(palette), 2, replace=False)]
                colours = [two[int(i)] for i in rng.integers(0, 2, int(counts[j]))]
            if colours:
                plans[j][kind] = {"where": wheres[j], "colours": colours}
    return plans


def _place_objects(
    rng: np.random.Generator, lay: _Layout, plan: dict[str, dict[str, Any]]
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Draw the planned small objects on a copy of the layout; return it and what was drawn."""
    f = lay.size / 224.0
    image = lay.image.copy()
    draw = ImageDraw.Draw(image, "RGBA")
    placed: list[dict[str, Any]] = []
    taken: list[tuple[float, float, float]] = []

    def clear(x: float, y: float, r: float) -> bool:
        return all((x - a) ** 2 + (y - b) ** 2 > (r + c) ** 2 for a, b, c in taken)

    for kind, item in plan.items():
        where, colours = item["where"], item["colours"]
        drawn: list[str] = []
        if kind == "plane":
            length = rng.uniform(19, 23) * f
            spots = sorted(rng.choice(len(lay.apron_spots), min(len(colours), len(lay.apron_spots)), replace=False))
            for i, colour in zip(spots, colours):
                x, y, a = lay.apron_spots[int(i)]
                _draw_plane(draw, x, y, a, length, colour, lay.sun, f)
                taken.append((x, y, length / 2))
                drawn.append(colour)
        elif kind == "tank":
            slots = sorted(rng.choice(len(lay.tank_slots), min(len(colours), len(lay.tank_slots)), replace=False))
            for i, colour in zip(slots, colours):
                x, y = lay.tank_slots[int(i)]
                _draw_tank(draw, x, y, lay.tank_radius, colour, lay.sun, f)
                drawn.append(colour)
        elif kind == "ship":
            length = rng.uniform(14, 20) * f
            if where == "docked":
                cands = [(lay.dock_spots[int(i)], False) for i in rng.permutation(len(lay.dock_spots))]
            else:
                ys, xs = np.nonzero(lay.water_mask)
                river = lay.water_kind == "river"
                cands = []
                if len(ys):
                    pick = rng.integers(0, len(ys), 300)
                    base = lay.river_angle if river else rng.uniform(0, 2 * np.pi)
                    turn = rng.uniform(-0.15, 0.15, 300) if river else rng.uniform(-1.0, 1.0, 300)
                    ang = base + np.pi * (rng.random(300) < 0.5) + turn
                    cx, cy = xs[pick] + 0.5, ys[pick] + 0.5
                    ok = np.ones(300, dtype=bool)
                    for t in (-0.6, 0.6):  # bow and stern must be on open water
                        ex = (cx + t * length * np.cos(ang)).astype(np.int64)
                        ey = (cy + t * length * np.sin(ang)).astype(np.int64)
                        inside = (ex >= 0) & (ex < lay.size) & (ey >= 0) & (ey < lay.size)
                        ok &= inside
                        ok[inside] &= lay.water_mask[ey[inside], ex[inside]]
                    cands = [((float(cx[i]), float(cy[i]), float(ang[i])), True) for i in np.flatnonzero(ok)]
            for (x, y, a), sailing in cands:
                if len(drawn) == len(colours):
                    break
                if sailing and not clear(x, y, length * 0.6):  # berths are spaced already
                    continue
                colour = colours[len(drawn)]
                _draw_ship(draw, x, y, a, length, colour, sailing, f)
                taken.append((x, y, length * 0.6))
                drawn.append(colour)
        elif kind == "car":
            if where == "parking lot":
                cands = [lay.parking_spots[int(i)] for i in rng.permutation(len(lay.parking_spots))]
            else:
                lines = np.array(lay.road_lines, dtype=np.float64)
                which = rng.integers(0, len(lines), 150)
                px, py, a, w = lines[which].T
                t = rng.uniform(-0.7, 0.7, 150) * lay.size
                lane = (w / 4) * np.where(rng.random(150) < 0.5, 1.0, -1.0)
                x = px + t * np.cos(a) - lane * np.sin(a)
                y = py + t * np.sin(a) + lane * np.cos(a)
                a = a + np.where(lane < 0, np.pi, 0.0)
                ok = (x > 5 * f) & (x < lay.size - 5 * f) & (y > 5 * f) & (y < lay.size - 5 * f)
                cands = [(float(x[i]), float(y[i]), float(a[i])) for i in np.flatnonzero(ok)]
            for x, y, a in cands:
                if len(drawn) == len(colours):
                    break
                if where != "parking lot" and not clear(x, y, 3.2 * f):  # stalls are spaced already
                    continue
                colour = colours[len(drawn)]
                _draw_car(draw, x, y, a, colour, f)
                taken.append((x, y, 3.2 * f))
                drawn.append(colour)
        if drawn:
            placed.append({"kind": kind, "count": len(drawn), "colours": drawn, "where": where})
    return image, placed


# ----------------------------------------------------------------------------- captions
NOUNS = {
    "plane": ("plane", "planes", ["plane", "airplane"]),
    "ship": ("ship", "ships", ["ship", "boat"]),
    "car": ("car", "cars", ["car", "vehicle"]),
    "tank": ("storage tank", "storage tanks", ["storage tank", "oil tank", "tank"]),
}
LAND_NP = {
    "farmland": ["farmland", "green farmland", "some farmland", "fields", "cultivated fields"],
    "forest": ["a forest", "dense trees", "lush green trees", "the forest", "woods"],
    "desert": ["the desert", "bare yellow sand", "a desert", "bare land"],
    "grassland": ["a green meadow", "grassland", "green grass", "a piece of grassland"],
    "dense_residential": [
        "a dense residential area",
        "many densely arranged houses",
        "dense houses",
        "a crowded residential area",
    ],
    "sparse_residential": [
        "a sparse residential area",
        "scattered houses",
        "some sparse houses with trees",
        "houses among green trees",
    ],
}
DENSE_FARMLAND = ["dense farmland", "many small fields", "farmland divided into small plots"]


def _count_word(n: int, rng: np.random.Generator) -> str:
    if n >= 10:
        return (
            ["many", "lots of", "a lot of", "dozens of"][int(rng.integers(0, 4))]
            if n >= 12
            else ["many", "ten or more"][int(rng.integers(0, 2))]
        )
    if n == 1:
        return ["a", "one"][int(rng.integers(0, 2))]
    return NUMBER_WORDS[n]


def _object_np(obj: dict[str, Any], rng: np.random.Generator, colour: bool | None = None) -> str:
    kind, n, colours = obj["kind"], obj["count"], obj["colours"]
    _singular, _plural, variants = NOUNS[kind]
    noun_s = variants[int(rng.integers(0, len(variants)))]
    noun_p = noun_s + "s"
    distinct = sorted(set(colours), key=colours.index)
    if colour is None:
        colour = bool(rng.random() < 0.75)
    if not colour or n >= 12:
        return f"{_count_word(n, rng)} {noun_s if n == 1 else noun_p}"
    if len(distinct) == 1:
        return f"{_count_word(n, rng)} {distinct[0]} {noun_s if n == 1 else noun_p}"
    parts = []
    for c in distinct:
        k = colours.count(c)
        parts.append(f"{_count_word(k, rng)} {c} {noun_s if k == 1 else noun_p}")
    return " and ".join(parts)


def _where(obj: dict[str, Any], lay: _Layout, rng: np.random.Generator) -> str:
    kind, where = obj["kind"], obj["where"]
    has_buildings = any(s["kind"] == "buildings" for s in lay.structures)
    options: list[str]
    if kind == "plane":
        options = [
            "parked beside the runway",
            "parked on the apron",
            "lined up next to the taxiway",
            "parked near the runway",
        ]
        if has_buildings:
            options.append("parked near the terminal")
    elif kind == "tank":
        options = ["in the tank farm", "arranged neatly in the tank farm", "standing in the tank farm"]
        if "road" in lay.features:
            options.append("standing near the road")
    elif kind == "ship":
        if where == "docked":
            options = [
                "docked at the harbour",
                "moored beside the pier",
                "berthed along the piers",
                "docked in the port",
            ]
        else:
            water = {"river": "river", "sea": "sea", "lake": "lake"}[where]
            options = [f"sailing on the {water}", f"on the {water}", f"moving on the {water}"]
            if water == "sea":
                options.append("sailing on the blue sea")
    else:  # car
        if where == "parking lot":
            options = ["parked in the parking lot", "in the parking lot"]
            if has_buildings:
                options.append("parked near the buildings")
        else:
            options = ["driving on the road", "on the road", "running along the road"]
            if "bridge" in lay.features:
                options.append("crossing the bridge")
    return options[int(rng.integers(0, len(options)))]


def _land_np(lay: _Layout, rng: np.random.Generator, plain: bool = False) -> str:
    """A noun phrase for the land cover; ``plain`` avoids house phrases after "buildings in"."""
    if plain and lay.land_cover.endswith("residential"):
        kind = "dense" if lay.land_cover.startswith("dense") else "sparse"
        return [f"a {kind} residential area", "the residential area"][int(rng.integers(0, 2))]
    options = list(LAND_NP[lay.land_cover])
    if lay.land_cover == "farmland" and lay.dense:
        options += DENSE_FARMLAND
    return options[int(rng.integers(0, len(options)))]


def _layout_sentence(lay: _Layout, rng: np.random.Generator) -> str:
    land = _land_np(lay, rng)
    pick = lambda xs: xs[int(rng.integers(0, len(xs)))]  # noqa: E731
    feats = lay.features
    options: list[str] = []
    if "runway" in feats:
        options += [
            f"a long runway lies in {land}",
            f"a runway with a taxiway crosses {land}",
            f"an airport runway is surrounded by {land}",
            f"this is an airport beside {land}",
        ]
    if "river" in feats:
        options += [
            f"a river crosses {land}",
            f"a winding river runs through {land}",
            f"a river flows through {land}",
            f"there is a river in {land}",
        ]
        if "bridge" in feats:
            options += [f"a bridge crosses the river in {land}", "a road crosses the river over a bridge"]
    if "coastline" in feats:
        options += [
            f"the coastline separates the sea from {land}",
            f"the sea is next to {land}",
            f"a long coastline runs along {land}",
        ]
    if "lake" in feats:
        options += [f"a lake is surrounded by {land}", f"there is a blue lake in {land}"]
    if "two roads" in feats:
        options += [f"two roads cross in {land}", f"two straight roads go through {land}"]
    elif "road" in feats:
        options += [f"a road goes through {land}", f"a straight road crosses {land}", f"a road passes through {land}"]
    if not options:
        options += [f"this is {land}", f"it is a scene of {land}"]
    return pick(options)


def _structure_sentence(lay: _Layout, rng: np.random.Generator) -> str | None:
    if not lay.structures:
        return None
    s = lay.structures[int(rng.integers(0, len(lay.structures)))]
    kind = s["kind"]
    land = _land_np(lay, rng, plain=True)
    feature = next(
        (
            x
            for x in ("runway", "river", "road", "lake")
            if x in lay.features or (x == "road" and "two roads" in lay.features)
        ),
        None,
    )
    pick = lambda xs: xs[int(rng.integers(0, len(xs)))]  # noqa: E731
    if kind == "buildings":
        many = "several" if s["count"] > 2 else "two"
        opts = [
            f"{many} {s['colour']} buildings stand in {land}",
            f"there are {many} buildings in {land}",
            f"some buildings are located in {land}",
        ]
        if feature:
            opts.append(f"{many} buildings are near the {feature}")
    elif kind == "harbour":
        opts = [
            f"a harbour with {NUMBER_WORDS[s['piers']]} piers is on the coast",
            "there is a port with several piers",
            f"a harbour is built on the coast next to {land}",
        ]
    elif kind == "tank farm":
        opts = [
            f"a tank farm is located in {land}",
            "there is a tank farm with round foundations",
            f"a tank farm is surrounded by {land}",
        ]
    elif kind == "parking lot":
        opts = [
            f"there is a parking lot in {land}",
            "a parking lot is next to the buildings"
            if any(x["kind"] == "buildings" for x in lay.structures)
            else f"a parking lot lies in {land}",
        ]
    else:  # sports fields
        opts = [f"there is a {kind} in {land}", f"a {kind} is surrounded by {land}"]
        if feature:
            opts.append(f"a {kind} is near the {feature}")
    return pick(opts)


def _be(noun_phrase: str, count: int) -> str:
    return "is" if count == 1 and " and " not in noun_phrase else "are"


def _captions(lay: _Layout, objects: list[dict[str, Any]], rng: np.random.Generator) -> list[str]:
    """Five captions mixing large-layout, structure and small-object facts, in varied styles.

    With small objects present, at least three captions state their count (and usually
    colour), one describes the large layout only, and one mixes the layout with objects.
    """
    scene_np = {
        "airport": "an airport",
        "harbour": "a harbour",
        "river": "a river",
        "residential": "a residential area",
        "industrial": "an industrial area",
        "rural": "a rural area",
        "lake": "a lake",
    }[lay.archetype]

    def obj_sentence(obj: dict[str, Any], style: int) -> str:
        np_ = _object_np(obj, rng)
        be = _be(np_, obj["count"])
        where = _where(obj, lay, rng)
        if style == 0:
            return f"{np_} {be} {where}"
        if style == 1:
            return f"there {be} {np_} {where}"
        if style == 2:
            return f"{np_} {be} {where} surrounded by {_land_np(lay, rng)}"
        if style == 3:
            if scene_np.split()[-1] in where:  # "a lake with two boats on the lake"
                return f"{scene_np} with {np_}"
            return f"{scene_np} with {np_} {where}"
        return f"we can see {np_} {where}"

    captions: list[str] = []
    if objects:
        main = objects[0]
        other = objects[1] if len(objects) > 1 else None
        captions.append(obj_sentence(main, int(rng.integers(0, 2))))
        captions.append(_layout_sentence(lay, rng))
        captions.append(obj_sentence(main, int(rng.integers(2, 5))))
        if other is not None and rng.random() < 0.7:
            np_ = _object_np(other, rng)
            captions.append(
                f"{_layout_sentence(lay, rng)} and {np_} {_be(np_, other['count'])} {_where(other, lay, rng)}"
            )
        else:
            captions.append(f"{_layout_sentence(lay, rng)} with {_object_np(main, rng)}")
        fifth = _structure_sentence(lay, rng) if rng.random() < 0.5 else None
        captions.append(fifth or obj_sentence(main, int(rng.integers(0, 5))))
    else:
        captions.append(_layout_sentence(lay, rng))
        while len(captions) < CAPTIONS_PER_IMAGE:
            captions.append(_structure_sentence(lay, rng) or _layout_sentence(lay, rng))
    return [" ".join(c.split()) + " ." for c in captions[:CAPTIONS_PER_IMAGE]]


# ----------------------------------------------------------------------------- public API
def _scene_facts(lay: _Layout, objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "archetype": lay.archetype,
        "land_cover": lay.land_cover,
        "features": list(lay.features),
        "structures": [{k: v for k, v in s.items() if k != "centre"} for s in lay.structures],
        "objects": {o["kind"]: {"count": o["count"], "colours": o["colours"], "where": o["where"]} for o in objects},
    }


class _SceneMaker:
    """Renders scenes, caching the most recent layout so siblings share one render."""

    def __init__(self, seed: int, image_size: int, variants_per_layout: int) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}.")
        if variants_per_layout < 1:
            raise ValueError(f"variants_per_layout must be >= 1, got {variants_per_layout}.")
        self.seed, self.size, self.per = int(seed), int(image_size), int(variants_per_layout)
        self._group: int | None = None
        self._layout: _Layout | None = None
        self._plans: list[dict[str, Any]] = []

    def __call__(self, index: int) -> SynthScene:
        group, sibling = divmod(index, self.per)
        if group != self._group:
            self._layout = _layout(self.seed, group, self.size)
            self._plans = _variants(self.seed, group, self._layout, self.per)
            self._group = group
        lay = self._layout
        assert lay is not None
        rng = np.random.default_rng([self.seed, index, 2])
        image, objects = _place_objects(rng, lay, self._plans[sibling])
        captions = _captions(lay, objects, rng)
        return SynthScene(image=image, captions=captions, layout_id=group, scene=_scene_facts(lay, objects))


def render_scene(index: int, *, seed: int = 0, image_size: int = 224, variants_per_layout: int = 4) -> SynthScene:
    """Render scene ``index`` of the ``rs-synth`` corpus with this seed (no files written).

    Example:
        >>> scene = render_scene(0, seed=0, image_size=64)
        >>> scene.image.size, len(scene.captions)
        ((64, 64), 5)
    """
    return _SceneMaker(seed, image_size, variants_per_layout)(index)


def _splits_for_groups(n_groups: int, seed: int, fractions: tuple[float, float] = (0.1, 0.1)) -> list[str]:
    """Assign whole layout groups to splits (about 80/10/10), at least one group each when >= 3 groups."""
    n_val = max(1, round(fractions[0] * n_groups)) if n_groups >= 3 else 0
    n_test = max(1, round(fractions[1] * n_groups)) if n_groups >= 3 else 0
    order = np.random.default_rng([seed, 3]).permutation(n_groups)
    splits = ["train"] * n_groups
    for g in order[:n_val]:
        splits[int(g)] = "val"
    for g in order[n_val : n_val + n_test]:
        splits[int(g)] = "test"
    return splits


def _tokens(caption: str) -> list[str]:
    return [t for t in caption.replace(".", " ").split() if t]


def _write_corpus(
    out: Path, n_images: int, seed: int, image_size: int, variants_per_layout: int, progress: bool
) -> Path:
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    maker = _SceneMaker(seed, image_size, variants_per_layout)
    n_groups = -(-n_images // variants_per_layout)
    group_split = _splits_for_groups(n_groups, seed)
    width = max(5, len(str(n_images - 1)))
    entries = []
    iterator: Any = range(n_images)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="rs-synth", unit="img")
    sentid = 0
    for i in iterator:
        scene = maker(i)
        name = f"{i:0{width}d}.png"
        scene.image.save(images_dir / name, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        sentences = []
        for caption in scene.captions:
            sentences.append({"raw": caption, "tokens": _tokens(caption), "imgid": i, "sentid": sentid})
            sentid += 1
        entries.append(
            {
                "filepath": "images",
                "filename": name,
                "imgid": i,
                "split": group_split[scene.layout_id],
                "layout_id": scene.layout_id,
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
                "scene": scene.scene,
            }
        )
    meta = {
        "dataset": SYNTH_DATASET_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_images": n_images,
        "image_size": image_size,
        "variants_per_layout": variants_per_layout,
        "images": entries,
    }
    path = out / SYNTH_JSON_NAME
    path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path


def generate_synth_corpus(
    out_dir: str | os.PathLike,
    *,
    n_images: int = 1000,
    seed: int = 0,
    image_size: int = 224,
    variants_per_layout: int = 4,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``rs-synth`` to ``out_dir`` as a Karpathy JSON + ``images/*.png``; return the JSON path.

    The corpus is generated in a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a folder that looks complete. Splits are about 80/10/10 by
    layout group (siblings never straddle splits).
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}.")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty; pass overwrite=True (CLI: --overwrite) or choose another folder."
        )
    with atomic_directory(out, overwrite=overwrite) as staging:
        _write_corpus(staging, n_images, seed, image_size, variants_per_layout, progress)
    return out / SYNTH_JSON_NAME


def ensure_synth_corpus(
    directory: str | os.PathLike,
    *,
    n_images: int = 1000,
    seed: int = 0,
    image_size: int = 224,
    variants_per_layout: int = 4,
    progress: bool = True,
) -> Path:
    """Return the JSON path of the ``rs-synth`` corpus in ``directory``, generating it if missing.

    An existing corpus made with other parameters is an error rather than silently reused
    (the caller asked for a specific corpus) or silently replaced (it may be someone's data).
    """
    directory = Path(directory)
    path = directory / SYNTH_JSON_NAME
    wanted = {
        "seed": seed,
        "n_images": n_images,
        "image_size": image_size,
        "variants_per_layout": variants_per_layout,
        "generator_version": GENERATOR_VERSION,
    }
    if not path.is_file():
        try:
            generate_synth_corpus(
                directory,
                n_images=n_images,
                seed=seed,
                image_size=image_size,
                variants_per_layout=variants_per_layout,
                progress=progress,
            )
        except (FileExistsError, OSError):
            if not path.is_file():  # not a concurrent writer that just finished: a real problem
                raise
    with open(path, encoding="utf-8") as fh:
        meta = json.load(fh)
    found = {k: meta.get(k) for k in wanted}
    if found != wanted:
        raise ValueError(
            f"{path} holds an rs-synth corpus made with {found}, not the requested {wanted}; "
            "use another directory or delete this one."
        )
    return path

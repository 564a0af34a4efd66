"""Raster helpers: pixel coordinates, rotated frames, polygons, smooth noise, blending, dilation.

Scenes are painted on float32 ``H×W×3`` arrays (land cover, water, roads) and then on a PIL
image (structures and objects); these helpers are the shared geometry of both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .scene import Point

_PIXEL_CENTRES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` of a ``size``×``size`` image, cached per size."""
    if size not in _PIXEL_CENTRES:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        _PIXEL_CENTRES[size] = (x + 0.5, y + 0.5)
    return _PIXEL_CENTRES[size]


def rotated_frame(size: int, centre_x: float, centre_y: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel's coordinates along ``angle`` and across it, relative to the centre point."""
    x, y = pixel_centres(size)
    cos, sin = math.cos(angle), math.sin(angle)
    dx, dy = x - centre_x, y - centre_y
    return dx * cos + dy * sin, -dx * sin + dy * cos


def to_image_points(
    points: Sequence[Point], centre_x: float, centre_y: float, angle: float, scale: float = 1.0
) -> list[Point]:
    """A polygon in a local (along, across) frame -> image coordinates."""
    cos, sin = math.cos(angle), math.sin(angle)
    return [
        (centre_x + scale * (along * cos - across * sin), centre_y + scale * (along * sin + across * cos))
        for along, across in points
    ]


def rectangle(centre_x: float, centre_y: float, length: float, width: float, angle: float) -> list[Point]:
    """The four corners of a rotated rectangle (``length`` along ``angle``)."""
    half_length, half_width = length / 2, width / 2
    corners = [
        (-half_length, -half_width),
        (half_length, -half_width),
        (half_length, half_width),
        (-half_length, half_width),
    ]
    return to_image_points(corners, centre_x, centre_y, angle)


def smooth_upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Smoothstep-bilinear upsampling of a coarse random grid to ``size``×``size``."""
    rows, columns = grid.shape
    grid_y = np.linspace(0, rows - 1.001, size, dtype=np.float32)
    grid_x = np.linspace(0, columns - 1.001, size, dtype=np.float32)
    y0, x0 = grid_y.astype(np.int64), grid_x.astype(np.int64)
    fraction_y, fraction_x = grid_y - y0, grid_x - x0
    fraction_y = fraction_y * fraction_y * (3 - 2 * fraction_y)
    fraction_x = fraction_x * fraction_x * (3 - 2 * fraction_x)
    top_left, top_right = grid[y0][:, x0], grid[y0][:, x0 + 1]
    bottom_left, bottom_right = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    top = top_left + (top_right - top_left) * fraction_x
    bottom = bottom_left + (bottom_right - bottom_left) * fraction_x
    return (top + (bottom - top) * fraction_y[:, None]).astype(np.float32)


def value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1] with about ``cells`` features across the image."""
    return smooth_upsample(rng.random((cells + 2, cells + 2), dtype=np.float32), size)


def blend(canvas: np.ndarray, mask: np.ndarray, colour: Any, alpha: float | np.ndarray = 1.0) -> None:
    """In place: ``canvas[mask] = lerp(canvas, colour, alpha)``; colour and alpha may be per pixel."""
    colour = np.asarray(colour, dtype=np.float32)
    target = colour[mask] if colour.ndim == 3 else colour
    if np.ndim(alpha) == 0:
        if alpha == 1.0:
            canvas[mask] = target
            return
        weight: Any = np.float32(alpha)
    else:
        weight = np.asarray(alpha, dtype=np.float32)[mask][:, None]
    pixels = canvas[mask]
    canvas[mask] = pixels + (target - pixels) * weight


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Cheap dilation (shifted ORs at doubling steps up to ``radius`` pixels)."""
    grown = mask.copy()
    step = 1
    while step <= radius:
        wider = grown.copy()
        wider[step:] |= grown[:-step]
        wider[:-step] |= grown[step:]
        wider[:, step:] |= grown[:, :-step]
        wider[:, :-step] |= grown[:, step:]
        grown = wider
        step *= 2
    return grown

"""A PNG of retrieval examples, drawn with Pillow only (no matplotlib dependency).

Top block: a few text queries, each with its top-k images; ground-truth images get a green
frame and a ``[GT]`` mark, the others a grey frame. Bottom block: a few image queries, each
with its top-k captions; captions of the query image are green and marked ``[GT]`` (plain
ASCII: Pillow's built-in font has no check-mark glyph).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["render_retrieval_examples", "top_k_rows"]

GREEN = (22, 150, 60)
GREY = (170, 170, 170)
BLACK = (20, 20, 20)
WHITE = (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 (FreeType build)
    except TypeError:  # older Pillow: fixed-size bitmap font
        return ImageFont.load_default()


def top_k_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best columns per row; ties resolved by lower index (stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


def _thumb(image: Any, size: int) -> Image.Image:
    if not isinstance(image, Image.Image):
        from msa_hf.processing_msa import to_float_rgb

        image = Image.fromarray((to_float_rgb(image) * 255).round().astype(np.uint8))
    image = image.convert("RGB")
    scale = size / max(image.width, image.height)  # fit the box, enlarging small chips too
    image = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS,
    )
    canvas = Image.new("RGB", (size, size), WHITE)
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def render_retrieval_examples(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    caption_image_ids: Sequence[int] | np.ndarray,
    captions: Sequence[str],
    get_image: Callable[[int], Any],
    out_path: str | os.PathLike,
    *,
    num_text_queries: int = 3,
    num_image_queries: int = 3,
    k: int = 5,
    seed: int = 0,
    thumb: int = 128,
) -> Path:
    """Draw retrieval examples and save them as a PNG; returns the path.

    Queries are drawn at random (``seed``) so the picture is not always the first images of
    the split; embeddings must be L2-normalised (as :func:`encode_images` returns them).
    ``get_image(i)`` returns image ``i`` (PIL or array).
    """
    ids = np.asarray(caption_image_ids)
    n_img, n_txt = image_embeds.shape[0], text_embeds.shape[0]
    k = min(k, n_img, n_txt)
    rng = np.random.default_rng(seed)
    text_q = rng.choice(n_txt, size=min(num_text_queries, n_txt), replace=False)
    with_caps = np.unique(ids)  # image queries need a caption to be ground truth
    image_q = rng.choice(with_caps, size=min(num_image_queries, with_caps.size), replace=False)

    font, small = _font(14), _font(12)
    pad, label_w = 10, 260
    row_h = thumb + 2 * pad + 18
    width = label_w + k * (thumb + pad) + 2 * pad
    cap_line_h = 18
    img_row_h = max(thumb + 2 * pad, k * 2 * cap_line_h + 2 * pad)
    height = 40 + len(text_q) * row_h + 40 + len(image_q) * img_row_h + pad
    width = max(width, label_w + 700)
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)

    y = pad
    draw.text((pad, y), f"Text -> image: top-{k} (green frame = ground truth)", fill=BLACK, font=font)
    y += 30
    t2i_top = top_k_rows(text_embeds[torch.as_tensor(text_q)] @ image_embeds.t(), k)
    for qi, j in enumerate(text_q):
        lines = textwrap.wrap(str(captions[j]), width=34)[:6]
        draw.multiline_text((pad, y + pad), "\n".join(lines), fill=BLACK, font=small, spacing=3)
        for r, i in enumerate(t2i_top[qi].tolist()):
            x = label_w + r * (thumb + pad)
            hit = i == int(ids[j])
            canvas.paste(_thumb(get_image(i), thumb), (x, y + pad))
            draw.rectangle(
                [x - 3, y + pad - 3, x + thumb + 2, y + pad + thumb + 2],
                outline=GREEN if hit else GREY,
                width=4 if hit else 1,
            )
            draw.text(
                (x, y + pad + thumb + 3),
                f"#{r + 1} img {i}" + ("  [GT]" if hit else ""),
                fill=GREEN if hit else BLACK,
                font=small,
            )
        y += row_h

    y += 10
    draw.text((pad, y), f"Image -> text: top-{k} captions (green = a caption of this image)", fill=BLACK, font=font)
    y += 30
    i2t_top = top_k_rows(image_embeds[torch.as_tensor(image_q)] @ text_embeds.t(), k)
    for qi, i in enumerate(image_q):
        canvas.paste(_thumb(get_image(int(i)), thumb), (pad, y + pad))
        draw.text((pad + thumb + 6, y + pad), f"img {int(i)}", fill=BLACK, font=small)
        for r, j in enumerate(i2t_top[qi].tolist()):
            hit = int(ids[j]) == int(i)
            text = f"#{r + 1} {'[GT] ' if hit else ''}{captions[j]}"
            wrapped = textwrap.wrap(text, width=100)[:2]
            draw.multiline_text(
                (label_w, y + pad + r * 2 * cap_line_h),
                "\n".join(wrapped),
                fill=GREEN if hit else BLACK,
                font=small,
                spacing=2,
            )
        y += img_row_h

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out

#!/usr/bin/env python
"""Draw the README's architecture figure of MSA: ``docs/images/architecture.png``.

The figure is a diagram, not a measurement: it shows what docs/method.md defines (sections
1-5). The pooled output of every backbone stage feeds both the global image embedding and its
own MSCMAT block, which scores it against the caption's tokens; the losses use both, and
retrieval uses only the cosine of the two global embeddings. Rerun after editing::

    python docs/draw_architecture.py [--out docs/images/architecture.png]

Needs matplotlib (extras ``train`` or ``dev``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from PIL import Image

DEFAULT_OUT = Path(__file__).resolve().parent / "images" / "architecture.png"
IMAGE_COLOR = "#dbe8f6"
TEXT_COLOR = "#fbe3cc"
MSCMAT_COLOR = "#dcefd9"
LOSS_COLOR = "#eeeeee"
GROUP_COLOR = "#f7f7f7"
# (stage name, feature map at 224 px input for ResNet-50, pooling of the paper)
STAGES = [
    ("stage 1", "56×56", "max"),
    ("stage 2", "28×28", "max"),
    ("stage 3", "14×14", "max"),
    ("stage 4", "7×7", "avg"),
]
SUBSCRIPTS = "₁₂₃₄"


def box(axis, x0: float, y0: float, x1: float, y1: float, text: str, color: str, **text_options) -> None:
    """A rounded box from (x0, y0) to (x1, y1) with centred text."""
    axis.add_patch(
        FancyBboxPatch(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor=color,
            edgecolor="#555555",
            linewidth=1.0,
        )
    )
    axis.text((x0 + x1) / 2, (y0 + y1) / 2, text, ha="center", va="center", fontsize=9, **text_options)


def group(axis, x0: float, y0: float, x1: float, y1: float, label: str) -> None:
    """A dashed frame around related boxes, its label to the left of it."""
    axis.add_patch(
        FancyBboxPatch(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            boxstyle="round,pad=0.02,rounding_size=0.15",
            facecolor=GROUP_COLOR,
            edgecolor="#999999",
            linestyle="--",
            linewidth=0.9,
            zorder=0,
        )
    )
    axis.text(x0 - 0.1, (y0 + y1) / 2, label, ha="right", va="center", fontsize=8, color="#555555", style="italic")


def arrow(axis, start: tuple[float, float], end: tuple[float, float], label: str = "", **options) -> None:
    axis.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, linewidth=1.1, color="#333333", **options)
    )
    if label:
        axis.text(
            (start[0] + end[0]) / 2 + 0.06, (start[1] + end[1]) / 2, label, fontsize=8, color="#333333", va="center"
        )


def draw(out: Path) -> Path:
    figure, axis = plt.subplots(figsize=(11, 5.4))
    axis.set_xlim(0, 12)
    axis.set_ylim(0, 6.2)
    axis.axis("off")

    # Image tower: the stages, each smaller in space and deeper in channels.
    box(axis, 0.1, 3.9, 1.4, 5.3, "aerial\nimage", IMAGE_COLOR, weight="bold")
    centres = [2.45, 3.9, 5.35, 6.8]
    heights = [1.5, 1.2, 0.95, 0.7]
    for k, ((name, size, _), x, h) in enumerate(zip(STAGES, centres, heights)):
        box(axis, x - 0.5, 4.6 - h / 2, x + 0.5, 4.6 + h / 2, f"{name}\n{size}", IMAGE_COLOR)
        start = (1.4, 4.6) if k == 0 else (centres[k - 1] + 0.5, 4.6)
        arrow(axis, start, (x - 0.5, 4.6))
    axis.text(4.6, 5.65, "image tower (ResNet-50, EfficientNet, CLIP/ViT layers, ...)", ha="center", fontsize=9)

    # Pooled scale features: one vector per stage.
    group(axis, 1.75, 2.85, 7.5, 3.5, "pooled scale\nfeatures sₖ")
    for k, ((_, _, pooling), x) in enumerate(zip(STAGES, centres)):
        box(axis, x - 0.42, 2.95, x + 0.42, 3.4, f"s{SUBSCRIPTS[k]} ({pooling})", IMAGE_COLOR)
        arrow(axis, (x, 4.6 - heights[k] / 2), (x, 3.4))

    # Global image embedding from all scales.
    box(axis, 8.3, 2.75, 10.5, 3.6, "image projection\nΣₖ Wₖ sₖ → gate → v", IMAGE_COLOR)
    arrow(axis, (7.5, 3.18), (8.3, 3.18))

    # MSCMAT: each scale scored against the caption tokens.
    group(axis, 1.75, 1.3, 7.5, 2.15, "MSCMAT\n(training only)")
    for k, x in enumerate(centres):
        box(axis, x - 0.55, 1.4, x + 0.55, 2.05, f"MSCMAT{SUBSCRIPTS[k]}\n→ S{SUBSCRIPTS[k]} (B×B)", MSCMAT_COLOR)
        arrow(axis, (x, 2.95), (x, 2.05))

    # Text tower.
    box(axis, 0.1, 0.2, 1.4, 0.95, "caption", TEXT_COLOR, weight="bold")
    box(axis, 1.8, 0.2, 7.45, 0.95, "text tower (BERT, MiniLM, CLIP text, ...)", TEXT_COLOR)
    arrow(axis, (1.4, 0.575), (1.8, 0.575))
    arrow(axis, (4.6, 0.95), (4.6, 1.3), label="tokens T")

    # Losses and retrieval.
    box(
        axis,
        8.3,
        4.35,
        11.9,
        5.3,
        "triplet loss on cos(v, t)\n(hardest in-batch negative)",
        LOSS_COLOR,
    )
    arrow(axis, (9.4, 3.6), (9.4, 4.35), label="v")
    axis.plot([7.45, 11.5], [0.575, 0.575], color="#333333", linewidth=1.1)
    arrow(axis, (11.5, 0.575), (11.5, 4.35))
    axis.text(8.3, 0.68, "t (global text embedding)", fontsize=8, color="#333333")
    box(
        axis,
        8.3,
        1.25,
        11.9,
        2.2,
        "MSCMA: each Sₖ matches images\nto their captions, scale by scale\nCSMMC: S₄ teaches S₁–S₃",
        LOSS_COLOR,
    )
    arrow(axis, (7.5, 1.72), (8.3, 1.72))
    axis.text(
        0.1,
        6.0,
        "MSA: every scale is aligned with the text on its own.  At test time only v and t are computed: "
        "retrieval = cos(v, t).",
        fontsize=9.5,
        weight="bold",
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    with Image.open(out) as drawn:  # a palette image: a third of the size, the same picture
        small = drawn.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"PNG to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    path = draw(args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

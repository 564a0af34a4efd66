#!/usr/bin/env python
"""Peak memory of one data-loader worker turning a huge JPEG into ``pixel_values``.

A worker of :func:`msa_hf.data.views.image_loader` reads a file, decodes it with
:func:`msa_hf.data.images.load_image` and preprocesses it with ``MSAImageProcessor``. This
script writes one large JPEG (default 12,000 × 12,000 = 144 megapixels, smooth content plus
noise) and measures, each in a fresh subprocess:

* ``full decode``: ``load_image(path)`` (PIL decodes every pixel) + the processor, the
  behaviour before ``target_size`` existed;
* ``target_size``: ``load_image(path, target_size=image_size)`` (JPEG decoder scaling to
  ≥ 2 × image_size, then a box reduce) + the processor, what every msa_hf path does now.

Peak memory is the process's resident-set high-water mark (``VmHWM``, reset after the imports
through ``/proc/self/clear_refs``; ``ru_maxrss`` where that is not writable, which can
over-report) minus the RSS after imports, so it counts what one image costs a worker on top
of the libraries. It also
prints the time of each path and the largest difference of the two ``pixel_values``.

Usage::

    python benchmarks/large_image_decode.py                 # 144 MP, image_size 224
    python benchmarks/large_image_decode.py --side 6000 --image-size 384
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, resource, sys, time
from pathlib import Path
import torch
from msa_hf import MSAImageProcessor
from msa_hf.data.images import load_image

path, image_size, reduced, out = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
processor = MSAImageProcessor(image_size=image_size)
processor(torch.zeros(3, 8, 8))  # warm up the processor's code paths
def status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
try:
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    peak_field = "VmHWM"
except OSError:
    peak_field = None
base = status_kib("VmRSS")
start = time.perf_counter()
image = load_image(path, target_size=image_size if reduced else None)
pixels = processor(image)["pixel_values"]
seconds = time.perf_counter() - start
peak = status_kib(peak_field) if peak_field else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
torch.save(pixels, out)
print(json.dumps({"decoded": list(image.size), "peak_mib": (peak - base) / 1024, "seconds": seconds}))
"""


def make_jpeg(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (side // 100, side // 100, 3), dtype=np.uint8))
    image = coarse.resize((side, side), Image.BILINEAR)
    noise = Image.effect_noise((side, side), 20).convert("RGB")
    Image.blend(image, noise, 0.15).save(path, "JPEG", quality=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=12_000, help="width and height of the JPEG (default 12000)")
    parser.add_argument("--image-size", type=int, default=224, help="the processor's image_size (default 224)")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        jpeg = Path(tmp) / "scene.jpg"
        make_jpeg(jpeg, args.side)
        print(f"{args.side} x {args.side} JPEG ({args.side**2 / 1e6:.0f} MP, {jpeg.stat().st_size / 2**20:.1f} MiB)")
        rows = {}
        for name, reduced in (("full decode", "0"), ("target_size", "1")):
            out = Path(tmp) / f"{reduced}.pt"
            result = subprocess.run(
                [sys.executable, "-c", WORKER, str(jpeg), str(args.image_size), reduced, str(out)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows[name] = {**json.loads(result.stdout.strip().splitlines()[-1]), "pixels": torch.load(out)}
        diff = (rows["full decode"]["pixels"] - rows["target_size"]["pixels"]).abs()
    print(f"{'path':<12}  {'decoded size':>13}  {'peak MiB':>9}  {'seconds':>7}")
    for name, row in rows.items():
        size = "x".join(map(str, row["decoded"]))
        print(f"{name:<12}  {size:>13}  {row['peak_mib']:>9.0f}  {row['seconds']:>7.2f}")
    print(f"pixel_values difference: max {diff.max():.3f}, mean {diff.mean():.4f} (normalised units)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Regenerate the README's screenshot of ``msa-app``: index an image folder, search it in headless Chromium.

Rerunnable: the index is built once and then reused (updated incrementally when images
changed; rebuilt when the model's weights changed), so after training a better model the
same command refreshes both the index and the picture::

    python docs/make_app_screenshot.py --model outputs/default/best \\
        --images ../shared/data/ucm-captions/images --index outputs/ucm-captions.idx \\
        --query "two planes parked beside a runway" --out docs/images/msa-app.png

Needs the ``app`` and ``dev`` extras (selenium) and Chromium with ChromeDriver (Debian: ``chromium chromium-driver``).
The PNG is reduced to a palette image so that it stays small (the script reports its size).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser driver is test tooling
from chromium_app import headless_chromium, serve_app

from msa_hf import create_model_and_processor
from msa_hf.retrieval import IndexMismatchError, build_index

ALL_IMAGES_LOADED = (
    "const imgs = document.querySelectorAll('#text-gallery img');"
    "return imgs.length > 0 && Array.from(imgs).every(i => i.complete && i.naturalWidth > 0);"
)


def ensure_index(model_source: str, images: Path, index: Path) -> None:
    """Build or update the index of ``images`` with the model; rebuild it if it holds another model's embeddings."""
    model, processor, _ = create_model_and_processor(model_source, device=None)
    try:
        build_index(images, model, processor, index)
    except IndexMismatchError:
        print(f"{index} was built with other weights: rebuilding it", file=sys.stderr)
        build_index(images, model, processor, index, overwrite=True)


def shoot(model: str, index: Path, query: str, k: int, out: Path, size: tuple[int, int]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "msa-app.log"
        with serve_app(["--model", model, "--index", str(index)], log) as app, headless_chromium(size) as driver:
            wait = WebDriverWait(driver, 60)
            driver.get(app.url)
            box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#text-query textarea"))
            k_box = driver.find_element(By.CSS_SELECTOR, "#text-k input[type=number]")
            k_box.send_keys(Keys.CONTROL, "a")
            k_box.send_keys(str(k), Keys.TAB)
            box.send_keys(query)
            driver.find_element(By.ID, "text-search").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#text-gallery .caption-label")) == k)
            wait.until(lambda d: d.execute_script(ALL_IMAGES_LOADED))
            time.sleep(0.5)  # let the layout settle after the last image
            raw = Path(tmp) / "raw.png"
            driver.save_screenshot(str(raw))
        out.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(raw).convert("RGB")
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="MSA from_pretrained folder (the app's --model)")
    parser.add_argument("--images", type=Path, required=True, help="image folder to index")
    parser.add_argument("--index", type=Path, required=True, help="index folder (built or reused)")
    parser.add_argument("--query", default="two planes parked beside a runway")
    parser.add_argument("-k", type=int, default=8, help="results shown")
    parser.add_argument("--out", type=Path, default=Path("docs/images/msa-app.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    ensure_index(args.model, args.images, args.index)
    shoot(args.model, args.index, args.query, args.k, args.out, (args.width, args.height))
    print(f"screenshot written to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

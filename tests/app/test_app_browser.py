"""The app in a real browser: msa-app on localhost over a small rs-synth index, driven by headless Chromium.

Skips where Selenium, Gradio or Chromium with ChromeDriver is missing (`.ci/run` installs
Debian's chromium + chromium-driver). The screenshot lands in the test's tmp folder, or in
``$MSA_APP_SCREENSHOT_DIR`` when set.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from chromium_app import find_chromium, headless_chromium, serve_app

from msa_hf.app.service import EMPTY_QUERY_MESSAGE
from msa_hf.retrieval import ImageIndex

pytest.importorskip("gradio", reason="the app needs gradio (extra `app`)")
pytest.importorskip("selenium", reason="the browser test drives Chromium through selenium (extra `dev`)")
if find_chromium() is None:
    pytest.skip(
        "no Chromium with ChromeDriver on PATH (Debian: apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

QUERY = "two planes parked beside a runway"
K = 5
CAPTION = re.compile(r"^#(\d+) · (-?\d\.\d{3}) · (\S+)$")


def _captions(driver) -> list[str]:
    return [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, "#text-gallery .caption-label")]


def _set_number(driver, selector: str, value: int) -> None:
    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def test_text_search_in_chromium(tmp_path, tiny_model_dir, synth_index_path, tiny_model, tiny_processor):
    start = time.monotonic()
    expected = ImageIndex.load(synth_index_path).search_text(QUERY, tiny_model, tiny_processor, k=K)[0]
    args = ["--model", str(tiny_model_dir), "--index", str(synth_index_path)]
    with serve_app(args, tmp_path / "msa-app.log") as app, headless_chromium() as driver:
        wait = WebDriverWait(driver, 30)
        driver.get(app.url)
        query = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#text-query textarea"))
        assert "12 images" in driver.find_element(By.ID, "status").text

        _set_number(driver, "#text-k input[type=number]", K)
        query.send_keys(QUERY)
        driver.find_element(By.ID, "text-search").click()
        wait.until(lambda d: len(_captions(d)) == K and all(_captions(d)))
        captions = _captions(driver)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#text-gallery img")) == K
        for caption, hit in zip(captions, expected):
            rank, score, name = CAPTION.match(caption).groups()
            assert (int(rank), name) == (hit.rank, hit.relpath)
            assert float(score) == pytest.approx(hit.score, abs=2e-3)
        wait.until(lambda d: re.search(r"Last search \d+\.\d ms", d.find_element(By.ID, "status").text))

        driver.find_elements(By.CSS_SELECTOR, "#text-gallery button.thumbnail-item")[1].click()
        path_box = driver.find_element(By.CSS_SELECTOR, "#selected-path textarea, #selected-path input")
        wait.until(lambda d: path_box.get_attribute("value") == str(Path(expected[1].path)))

        shot = Path(os.environ.get("MSA_APP_SCREENSHOT_DIR", tmp_path)) / "msa-app-browser-test.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        query.send_keys(Keys.CONTROL, "a")
        query.send_keys(Keys.DELETE)
        driver.find_element(By.ID, "text-search").click()
        message = driver.find_element(By.ID, "text-message")
        wait.until(lambda d: EMPTY_QUERY_MESSAGE in message.text)
        wait.until(lambda d: _captions(d) == [])
        assert app.process.poll() is None  # still serving
        assert "Traceback" not in app.log()
    assert time.monotonic() - start < 90

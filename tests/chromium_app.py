"""Drive the app in a real browser: start ``msa-app`` on a free local port and open headless Chromium.

Test tooling, not part of the package: shared by the browser test (``tests/app/test_app_browser.py``)
and the README screenshot script (``docs/make_app_screenshot.py``). Needs Selenium (extra ``dev``) and a Chromium with its
ChromeDriver (Debian: ``apt-get install chromium chromium-driver``). Chromium runs with
background networking off, so it never tries to reach the internet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_FLAGS", "AppProcess", "find_chromium", "free_port", "headless_chromium", "serve_app"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str, str] | None:
    """Paths of a Chromium browser and its ChromeDriver, or ``None`` if either is missing."""
    browser = next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def headless_chromium(window_size: tuple[int, int] = (1280, 1000)) -> Iterator[Any]:
    """A Selenium ``webdriver.Chrome`` on headless Chromium with a fresh profile, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise FileNotFoundError(
            "No Chromium with ChromeDriver found; install them (Debian: apt-get install chromium chromium-driver)."
        )
    browser, driver_path = found
    with tempfile.TemporaryDirectory(prefix="msa-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={window_size[0]},{window_size[1]}")
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


class AppProcess:
    """A running ``msa-app`` subprocess: its URL and its log (stdout and stderr together)."""

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def serve_app(
    app_args: Sequence[str], log_path: str | os.PathLike, *, timeout: float = 90.0, host: str = "127.0.0.1"
) -> Iterator[AppProcess]:
    """Run ``python -m msa_hf.app APP_ARGS --host HOST --port FREE`` until the block ends.

    Waits until the page answers (or the process dies, or ``timeout`` passes, which raise a
    ``RuntimeError`` with the app's log).
    """
    port = free_port(host)
    url = f"http://{host}:{port}/"
    log_path = Path(log_path)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "msa_hf.app", *app_args, "--host", host, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    app = AppProcess(process, url, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"msa-app exited with code {process.returncode} before serving:\n{app.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"msa-app did not answer on {url} within {timeout:.0f} s:\n{app.log()}")
            time.sleep(0.25)
        yield app
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

"""Headless Chromium for the browser tests, from Debian's packages.

Nothing here downloads a browser: the tests use ``/usr/bin/chromium`` and
``/usr/bin/chromedriver`` (``apt-get install chromium chromium-driver``).
Without them the browser tests skip, except under ``CI``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("JOBKIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("JOBKIT_CHROMEDRIVER", "/usr/bin/chromedriver")
HOW = (
    "browser tests need headless Chromium: apt-get install chromium "
    "chromium-driver, and pip install selenium (the test extra)"
)


def missing() -> str | None:
    """What is missing to drive a browser, or None if nothing is."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing"
    return None


def need_browser() -> None:
    """Skip the calling test without a browser; under CI, fail it instead."""
    why = missing()
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why}; {HOW}", pytrace=False)
    pytest.skip(f"{why}; {HOW}")


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium driven by selenium, in a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="jobkit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

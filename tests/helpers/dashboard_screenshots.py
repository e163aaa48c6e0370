"""Take the dashboard screenshots that chapter 8 shows.

    python tests/helpers/dashboard_screenshots.py [OUTDIR]

OUTDIR defaults to ``chapters/08-operating-a-queue_files``. It serves a
dashboard over a worker and a database with a quarter of an hour of
history, opens each page in headless Chromium, and saves
``dashboard-<page>.png``.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jobkit
from helpers.browser import chromium, missing
from helpers.dashboard_site import populate, running_site

OUT = "chapters/08-operating-a-queue_files"


def wait_for(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.1)


def shoot(driver: Any, url: str, path: str) -> None:
    driver.get(url)
    # The whole page, not just the window: Chromium renders beyond the
    # viewport when asked through the DevTools protocol.
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth,"
        " document.documentElement.scrollHeight]"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    print("saved", path)


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else OUT
    why = missing()
    if why:
        print(f"cannot take screenshots: {why}", file=sys.stderr)
        return 1
    os.makedirs(out, exist_ok=True)
    # The worker logs each failure it is meant to have; not worth showing here.
    logging.getLogger("jobkit").setLevel(logging.CRITICAL)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_site(tmp, history=True, refresh=0) as site,
        chromium(1280, 640) as driver,
    ):
        ids = site.call(populate, site)
        report = ids["report 2026-11-30"]

        def dead() -> bool:
            job = site.call(site.queue.get, report)
            return job.state is jobkit.JobState.DEAD

        wait_for("the report to go dead", dead)
        pages = {
            "overview": "/",
            "jobs": "/jobs?size=20",
            "job": f"/jobs/{report}",
            "dead": "/dead",
            "schedules": "/schedules",
            "workers": "/workers",
        }
        for name, path in pages.items():
            shoot(driver, site.url + path, os.path.join(out, f"dashboard-{name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

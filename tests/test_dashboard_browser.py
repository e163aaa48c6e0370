"""The dashboard in a real browser: headless Chromium over real HTTP, a real worker.

The site (tests/helpers/dashboard_site.py) runs a worker, the dashboard and
an unrelated "evil" page on 127.0.0.1, in a thread of their own. Each wait
polls the page (which refreshes itself) under selenium's deadline.

Without Chromium these tests skip, saying how to install it; under ``CI``
they fail instead. Screenshots are taken by
``python tests/helpers/dashboard_screenshots.py``, not here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import browser
from helpers.dashboard_site import SCRIPT_PAYLOAD, Site, populate, running_site

import jobkit

T = TypeVar("T")

pytestmark = pytest.mark.slow

if browser.missing() is not None and not os.environ.get("CI"):
    # One line for the whole file; under CI the fixture fails each test instead.
    pytest.skip(f"{browser.missing()}; {browser.HOW}", allow_module_level=True)

WAIT = 30.0


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    browser.need_browser()
    with browser.chromium() as chromium:
        yield chromium


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running_site(str(tmp_path)) as running:
        yield running


def wait_until(driver: Any, condition: Any, message: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The pages refresh themselves: an element found a moment ago may have
    # been replaced before it is read, so such a try is simply made again.
    return WebDriverWait(
        driver,
        WAIT,
        poll_frequency=0.05,
        ignored_exceptions=(StaleElementReferenceException,),
    ).until(condition, message)


def fresh(action: Callable[[], T]) -> T:
    """``action()``, made again if a self-refresh replaced what it was reading."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            return action()
        except StaleElementReferenceException:
            continue
    return action()


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return fresh(lambda: str(driver.find_element(By.CSS_SELECTOR, css).text))


def flash_of(driver: Any) -> str:
    """The message the page an action led to shows, once that page is there.

    A form's post, and the redirect after it, may still be on their way
    when the click returns.
    """
    from selenium.webdriver.common.by import By

    wait_until(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"),
        "the action's page never showed its message",
    )
    return text_of(driver, ".flash")


def click(driver: Any, css: str, *, text: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    def once() -> None:
        for element in driver.find_elements(By.CSS_SELECTOR, css):
            if text is None or element.text.strip() == text:
                element.click()
                return
        raise AssertionError(f"nothing to click at {css!r} with text {text!r}")

    fresh(once)


def state_of(site: Site, job_id: int) -> jobkit.JobState:
    job: jobkit.Job = site.call(site.queue.get, job_id)
    return job.state


def test_a_failed_job_is_read_requeued_and_succeeds(driver: Any, site: Site) -> None:
    """See a job fail, read its traceback, requeue it, see it succeed."""
    from selenium.webdriver.common.by import By

    ids = site.call(populate, site)
    report = ids["report 2026-11-30"]
    driver.get(site.url + "/")
    # The overview refreshes itself: the dead count reaches 2 with no reload.
    wait_until(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, ".cards .n")[2].text == "2",
        "the overview never showed the two dead reports",
    )
    click(driver, "header nav a", text="Dead letters")
    click(driver, "table a", text=str(report))
    assert driver.current_url == f"{site.url}/jobs/{report}"
    assert text_of(driver, ".state") == "dead"
    traceback = text_of(driver, "details[open] pre.traceback")
    assert "Traceback (most recent call last)" in traceback
    assert traceback.splitlines()[0] == (
        "ConnectionError: report service at reports.internal:8443 "
        "refused the connection"
    )
    assert len(driver.find_elements(By.CSS_SELECTOR, "pre.traceback")) == 2

    site.broken.clear()  # the report service is back
    click(driver, "header nav a", text="Dead letters")

    def requeue() -> None:
        row = next(
            r
            for r in driver.find_elements(By.CSS_SELECTOR, "table tr")
            if r.find_elements(By.LINK_TEXT, str(report))
        )
        row.find_element(By.XPATH, ".//button[text()='Requeue']").click()

    fresh(requeue)
    assert flash_of(driver) == f"Requeued job {report}."
    assert state_of(site, report) in (
        jobkit.JobState.QUEUED,
        jobkit.JobState.RUNNING,
        jobkit.JobState.SUCCEEDED,
    )
    driver.get(f"{site.url}/jobs/{report}")
    # The job page refreshes itself until the job is done.
    wait_until(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, ".state").text == "succeeded",
        "the requeued job never showed as succeeded",
    )
    assert '"report-2026-11-30.pdf"' in text_of(driver, "#live")
    assert state_of(site, report) is jobkit.JobState.SUCCEEDED


def test_a_payload_holding_a_script_shows_as_text(driver: Any, site: Site) -> None:
    """Markup in a payload and a result is shown, never run."""
    ids = site.call(populate, site)
    job_id = ids["script"]
    driver.get(f"{site.url}/jobs/{job_id}")
    assert SCRIPT_PAYLOAD in text_of(driver, "#live")
    assert "<b>bold</b> & co" in text_of(driver, "#live")
    assert driver.execute_script("return window.pwned === undefined")
    # Nothing the page loads is missing or refused by its own policy.
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_cancel_from_the_page_and_refuse_a_cross_site_form(
    driver: Any, site: Site
) -> None:
    """Another site's form cannot cancel a job; the dashboard's own button can."""
    ids = site.call(populate, site)
    job_id = ids["legacy"]  # on a queue no worker serves: it stays queued
    driver.get(f"{site.evil_url}/?target=/jobs/{job_id}/cancel")
    wait_until(
        driver,
        lambda d: "forbidden" in d.page_source,
        "the cross-site post was not refused",
    )
    assert state_of(site, job_id) is jobkit.JobState.QUEUED

    driver.get(f"{site.url}/jobs/{job_id}")
    click(driver, ".actions button", text="Cancel")
    assert flash_of(driver) == f"Cancelled job {job_id}."
    assert text_of(driver, ".state") == "cancelled"
    assert state_of(site, job_id) is jobkit.JobState.CANCELLED

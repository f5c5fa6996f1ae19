"""Headless Chromium for the page tests: Debian's ``chromium`` driven through its
``chromium-driver`` (scripts/browser.sh installs both; ``make test`` runs it). Both paths are
given to Selenium, so Selenium Manager never runs and nothing is downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1600,1000"]


def start_chromium(profile_dir: Path, log_name: str, *, size: tuple[int, int] | None = None,
                   performance_log: bool = False):
    """A new headless Chromium (a selenium WebDriver; the caller quits it).

    Args:
        profile_dir: an empty directory for its profile.
        log_name: ChromeDriver's log file under ``VAR_DIR/test-log``.
        size: the window's CSS size in pixels (default 1600 × 1000).
        performance_log: record every request the page makes (see :func:`requested_urls`).
    Raises:
        pytest.fail: Chromium or ChromeDriver is not installed.
    """
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/browser.sh (make test does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    # An alert the page might raise stays open (instead of being dismissed) so a test sees it.
    options.unhandled_prompt_behavior = "ignore"
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    log_dir = Path(settings.VAR_DIR) / "test-log"
    log_dir.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=str(log_dir / log_name)),
                              options=options)
    if size:
        driver.set_window_size(*size)
    driver.implicitly_wait(0)
    return driver


def requested_urls(driver) -> list[str]:
    """Every URL the browser sent a request to since the last call (Chromium's performance
    log, on a driver started with ``performance_log``), less those its Content-Security-Policy
    blocked before they were sent."""
    urls, blocked = {}, set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls[message["params"]["requestId"]] = message["params"]["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and message["params"].get("blockedReason") == "csp":
            blocked.add(message["params"]["requestId"])
    return [url for request_id, url in urls.items() if request_id not in blocked]


def click_to_load(driver, css: str, timeout: float = 15) -> None:
    """Click the element at ``css`` and wait until the page it loads replaced the current one.

    Waiting only for an element of the next page is not enough when the current page has an
    element that matches too (a form posted back to itself): the wait could find the old one,
    which then goes stale under the caller. The old page's root going stale is the sign that the
    navigation happened.

    Raises:
        selenium.common.exceptions.TimeoutException: no new page within ``timeout`` seconds.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(driver, timeout).until(gone(root))


#: What chromedriver sometimes answers, as a plain "unknown error", when asked about an element
#: of a document that a navigation is replacing at that moment (instead of "stale element").
_REPLACED_DOCUMENT = "does not belong to the document"


def gone(element):
    """A WebDriverWait condition: true once ``element`` is no longer in the page (it went stale).

    Selenium's ``staleness_of`` counts only StaleElementReferenceException as stale, so the
    answer chromedriver gives mid-navigation (see _REPLACED_DOCUMENT) failed the wait instead of
    ending it. Any other error is raised."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def condition(_driver) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if _REPLACED_DOCUMENT in (exc.msg or ""):
                return True
            raise
        return False

    return condition

"""The operators' dashboard (/ops/dashboard) in real headless Chromium against the whole stack:
staff only, it shows the numbers of a known run (the same as /metrics), redraws itself, and
loads nothing from outside the machine. Screenshots go to var/screenshots/."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from devtools import demo
from tests.conftest import wait_until
from tests.browser import click_to_load, requested_urls, start_chromium
from tests.test_e2e import register, wait_final
from tests.test_metrics import scrape, value
from notify.models import REACHED_PROVIDER

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-for-tests-only"
CONTENT = {"sms": {"body": "dashboard"}, "email": {"subject": "dashboard", "text": "dashboard"}}


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("dashboard")[1]


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium (Debian's, through its ChromeDriver) recording every request the page
    makes (Chrome's performance log)."""
    driver = start_chromium(tmp_path / "profile", "chromedriver-dashboard.log", performance_log=True)
    yield driver
    driver.quit()


def cell(driver, channel: str, field: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'#channels tr[data-channel="{channel}"] td[data-field="{field}"]').text


def test_dashboard_is_for_staff_only(stack):
    for path in ("/ops/dashboard", "/ops/dashboard/data"):
        request = urllib.request.Request(stack.api_url + path)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(request, timeout=10)
            raise AssertionError(f"{path} answered without a login")
        except urllib.error.HTTPError as exc:
            assert exc.code == 302 and "/admin/login/" in exc.headers["Location"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_dashboard_shows_the_numbers_of_a_known_run_and_loads_nothing_from_outside(stack, key, control, browser):
    from selenium.webdriver.common.by import By

    register(stack, key, control, "dash", phone="+821055512345", email="dash.board@example.com", platforms=())
    # The known run: three SMS sent, one email refused by the provider, one email sent.
    control.add_fault(provider="ses", status=400, reason="MessageRejected", count=1)
    status, refused = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                {"recipient": "dash", "channels": ["email"], "content": CONTENT})
    assert status == 202
    refused_delivery = wait_final(stack, key, refused["id"])["deliveries"][0]
    assert refused_delivery["status"] == "failed"
    ids = []
    for channels in (["sms"], ["sms"], ["sms", "email"]):
        status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                 {"recipient": "dash", "channels": channels, "content": CONTENT})
        assert status == 202
        ids.append(body["id"])
    for notification_id in ids:
        assert {d["status"] for d in wait_final(stack, key, notification_id)["deliveries"]} <= REACHED_PROVIDER

    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    browser.get(f"{stack.api_url}/admin/login/?next=/ops/dashboard")
    browser.find_element(By.ID, "id_username").send_keys("ops")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_to_load(browser, "#login-form input[type=submit]")
    wait_until(lambda: urllib.parse.urlsplit(browser.current_url).path == "/ops/dashboard", timeout=15,
               message="the dashboard after login")
    # It refreshes itself: several polls, and the numbers of the run.
    wait_until(lambda: int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-refreshes") or 0) >= 3,
               timeout=30, message="three refreshes")
    assert (cell(browser, "sms", "sent"), cell(browser, "sms", "queued"), cell(browser, "sms", "failed")) == ("3", "3", "0")
    assert (cell(browser, "email", "sent"), cell(browser, "email", "failed"), cell(browser, "email", "queued")) == (
        "1", "1", "2")
    assert cell(browser, "apns", "sent") == "0"
    # RabbitMQ refreshes its queue statistics every 5 s: the page shows them at a later refresh.
    wait_until(lambda: cell(browser, "sms", "queue") == "0" and cell(browser, "sms", "consumers") == "1",
               timeout=20, message="the sms queue's statistics (one consumer per worker node)")
    p50, p95, p99 = (float(v) for v in cell(browser, "sms", "call_ms").split(" / "))
    assert 0 < p50 <= p95 <= p99
    # The same numbers as /metrics.
    samples = scrape(stack)
    assert value(samples, "notify_deliveries_total", channel="sms", provider="twilio", status="sent", reason="") == 3
    assert value(samples, "notify_deliveries_total", channel="email", provider="ses", status="failed",
                 reason="MessageRejected") == 1
    # Breakers and the latest failure.
    breakers = {row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
                for row in browser.find_elements(By.CSS_SELECTOR, "#breakers tbody tr")}
    providers = {"apns", "fcm", "webpush", "twilio", "ses"}
    assert {scope: state for scope, state in breakers.items() if scope in providers} == dict.fromkeys(providers, "closed")
    failures = [[td.text for td in row.find_elements(By.TAG_NAME, "td")]
                for row in browser.find_elements(By.CSS_SELECTOR, "#failures tbody tr")]
    assert len(failures) == 1
    assert failures[0][1:] == ["email", "ses", "failed", "MessageRejected", "400", refused_delivery["id"]]
    # Charts drawn: a line per channel in each chart.
    for chart in ("send_rate", "failure_rate", "queue", "oldest_age", "p95"):
        lines = browser.find_elements(By.CSS_SELECTOR, f"#chart-{chart} svg polyline")
        assert {line.get_attribute("data-channel") for line in lines} == set(settings.NOTIFY_CHANNELS), chart

    shot = Path(settings.VAR_DIR) / "screenshots" / "ops-dashboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot))

    urls = requested_urls(browser)
    assert any(url.endswith("/ops/dashboard/data") for url in urls)
    # Network requests only (the browser's own chrome:// pages never leave it): all to the stack.
    outside = [url for url in urls if urllib.parse.urlsplit(url).scheme in ("http", "https", "ws", "wss", "ftp")
               and not url.startswith(stack.api_url + "/")]
    assert outside == [], outside

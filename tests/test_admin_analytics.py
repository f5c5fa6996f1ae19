"""The admin's analytics page of a template (notify.admin_analytics), in real headless Chromium
against pytest-django's live server: staff only, reached from the template's change page, it
shows the numbers of a known run (sent through the real accept path and store functions, then
rolled up), a chart per metric with a line per variant over the days, and the variants compared
with the significance of their difference. Screenshot: var/screenshots/admin-template-analytics.png.
"""

from __future__ import annotations

import datetime
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import F

from notify import abtest, analytics, receipts
from notify.models import Notification, Template
from tests.browser import click_to_load, requested_urls, start_chromium
from tests.test_analytics import finish, make_template, send

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-for-tests-only"
RECIPIENTS = 60


@pytest.fixture
def browser(tmp_path):
    driver = start_chromium(tmp_path / "profile", "chromedriver-analytics.log", size=(1500, 1900),
                            performance_log=True)
    yield driver
    driver.quit()


def campaign(api) -> dict:
    """An email campaign of template ``promo`` (variants a and b) to 60 people, every email
    sent; variant a's opened by 4 in 5, b's by 1 in 5; a click for every tenth; a third of the
    notifications accepted two days ago. Returns the expected numbers: per variant sent,
    opened, clicked; per day accepted; and the totals."""
    make_template(api)
    by_variant: dict[str, list[str]] = {"a": [], "b": []}
    notifications = []
    for i in range(RECIPIENTS):
        assert api.put(f"/api/v1/recipients/c{i}", {"email": f"c{i}@example.com"}, format="json").status_code in (200, 201)
        body = send(api, f"c{i}", template="promo", data={"code": str(i)}, channels=["email"])
        notifications.append(body["id"])
        by_variant[body["template"]["variant"]].append(body["deliveries"][0]["id"])
    expected = {}
    for variant, share in (("a", 0.8), ("b", 0.2)):
        ids = by_variant[variant]
        opened = ids[:round(len(ids) * share)]
        clicked = ids[::10]
        for delivery_id in ids:
            finish(delivery_id, "sent")
        for delivery_id in opened:
            receipts.record(delivery_id, "opened", source="tracking")
        for delivery_id in clicked:
            receipts.record(delivery_id, "clicked", source="tracking")
        expected[variant] = {"sent": len(ids), "opened": len(set(opened)), "clicked": len(clicked)}
    # Accepted two days ago (the rollup reads the accept time the row carries).
    old = notifications[::3]
    Notification.objects.filter(id__in=old).update(created_at=F("created_at") - datetime.timedelta(days=2))
    today = datetime.datetime.now(datetime.timezone.utc).date()
    expected["days"] = Counter({today - datetime.timedelta(days=2): len(old), today: RECIPIENTS - len(old)})
    return expected


def test_analytics_page_is_for_staff_only(client, app_key):
    template = Template.objects.get(app=app_key[0], name="order-shipped")
    url = f"/admin/notify/template/{template.id}/analytics/"
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    User.objects.create_user("someone", "s@example.com", PASSWORD)
    client.login(username="someone", password=PASSWORD)
    assert client.get(url).status_code == 302  # not staff: the login page again


def test_analytics_page_shows_the_numbers_of_a_known_run(api, app_key, browser, live_server):
    from selenium.webdriver.common.by import By

    expected = campaign(api)
    analytics.rollup(lag=0)
    template = Template.objects.get(app=app_key[0], name="promo")

    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    browser.get(f"{live_server.url}/admin/login/?next=/admin/notify/template/{template.id}/change/")
    browser.find_element(By.ID, "id_username").send_keys("ops")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_to_load(browser, "#login-form input[type=submit]")
    click_to_load(browser, "a.notify-analytics-link")
    assert urllib.parse.urlsplit(browser.current_url).path == f"/admin/notify/template/{template.id}/analytics/"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Analytics of promo"

    sent = expected["a"]["sent"] + expected["b"]["sent"]
    opened = expected["a"]["opened"] + expected["b"]["opened"]
    clicked = expected["a"]["clicked"] + expected["b"]["clicked"]
    shown = {cell.get_attribute("data-metric"): cell.text
             for cell in browser.find_elements(By.CSS_SELECTOR, "#totals td[data-metric]")}
    assert shown == {**{m: "0" for m in analytics.METRICS}, "accepted": str(RECIPIENTS), "sent": str(sent),
                     "opened": str(opened), "clicked": str(clicked)}
    rate = browser.find_element(By.CSS_SELECTOR, '#rates td[data-rate="open_rate"]').text
    assert rate == f"{opened / sent * 100:.2f}%"

    # The variants side by side, each number the run's; a's open rate against b's is tested.
    rows = {row.get_attribute("data-variant"): row for row in browser.find_elements(By.CSS_SELECTOR, "#variants tbody tr")}
    assert set(rows) == {"a", "b"}
    for variant in ("a", "b"):
        cells = {f: rows[variant].find_element(By.CSS_SELECTOR, f'td[data-field="{f}"]').text
                 for f in ("sent", "opened", "clicked", "open_rate")}
        numbers = expected[variant]
        assert cells == {"sent": str(numbers["sent"]), "opened": str(numbers["opened"]),
                         "clicked": str(numbers["clicked"]),
                         "open_rate": f"{numbers['opened'] / numbers['sent'] * 100:.2f}%"}
    opens = abtest.compare(expected["a"]["opened"], expected["a"]["sent"], expected["b"]["opened"], expected["b"]["sent"])
    clicks = abtest.compare(expected["a"]["clicked"], expected["a"]["sent"], expected["b"]["clicked"], expected["b"]["sent"])
    open_test = rows["b"].find_element(By.CSS_SELECTOR, 'td[data-field="open_test"]').text
    click_test = rows["b"].find_element(By.CSS_SELECTOR, 'td[data-field="click_test"]').text
    assert open_test == opens.verdict and open_test.endswith(": significant at 95%")
    assert click_test == clicks.verdict and click_test.startswith("too few to tell")

    # A chart per metric, a line per variant, one point per day of the last 30: the days the
    # run was accepted on carry its numbers.
    days = [datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=29 - i) for i in range(30)]
    for metric in ("accepted", "sent", "opened", "clicked"):
        lines = {line.get_attribute("data-series"): [int(v) for v in line.get_attribute("data-values").split(",")]
                 for line in browser.find_elements(By.CSS_SELECTOR, f"#chart-{metric} svg polyline")}
        assert set(lines) == {"a", "b"} and all(len(values) == 30 for values in lines.values()), metric
        assert sum(map(sum, lines.values())) == {"accepted": RECIPIENTS, "sent": sent, "opened": opened,
                                                 "clicked": clicked}[metric]
    accepted = browser.find_elements(By.CSS_SELECTOR, "#chart-accepted svg polyline")
    per_day = [sum(v) for v in zip(*([int(x) for x in line.get_attribute("data-values").split(",")]
                                     for line in accepted))]
    assert {day: n for day, n in zip(days, per_day) if n} == dict(expected["days"])

    shot = Path(settings.VAR_DIR) / "screenshots" / "admin-template-analytics.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot))
    outside = [url for url in requested_urls(browser) if urllib.parse.urlsplit(url).scheme in ("http", "https")
               and not url.startswith(live_server.url + "/")]
    assert outside == [], outside


def test_a_template_without_variants_says_so(api, app_key, client):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    client.login(username="ops", password=PASSWORD)
    template = Template.objects.get(app=app_key[0], name="order-shipped")
    page = client.get(f"/admin/notify/template/{template.id}/analytics/")
    assert page.status_code == 200 and b'id="no-variants"' in page.content
    bad = client.get(f"/admin/notify/template/{template.id}/analytics/", {"start": "2026-05-02", "end": "2026-05-01"})
    assert bad.status_code == 200 and "is after".encode() in bad.content and b'id="charts"' not in bad.content

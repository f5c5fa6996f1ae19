"""An opt-out holds at the moment of sending, whichever way it was made: through the API, the
admin or the hosted preference page. The whole stack runs (API under gunicorn, relay, Celery
workers, the provider sandbox); a delivery is made to wait by a sandbox fault (SES answers 503,
so it sits in ``retrying``), the recipient opts out, the fault is lifted, and the waiting
delivery must end ``suppressed: opted_out`` without reaching the sandbox, while the very next
send through the API (another process) is suppressed at once. A required category still goes
out. Every email of a category recipients may leave carries the preference link."""

from __future__ import annotations

import re
import secrets
import urllib.parse

import pytest
import requests
from django.contrib.auth.models import User

from devtools import demo
from notify.models import Delivery, Recipient
from tests.conftest import wait_until
from tests.test_e2e import FINAL

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

PUBLIC_URL = "https://notify.example.com"
STACK_ENV = {
    # Retries come quickly and do not run out while a test holds a delivery back.
    "NOTIFY_EMAIL_MAX_ATTEMPTS": "200",
    "NOTIFY_EMAIL_BACKOFF_MAX": "1",
    # https, so emails carry the RFC 8058 one-click unsubscribe beside the preference link.
    "NOTIFY_PUBLIC_URL": PUBLIC_URL,
}
EMAIL = {"email": {"subject": "News", "text": "Our spring sale.", "html": "<html><body><p>Our spring sale.</p></body></html>"}}


@pytest.fixture
def key(stack, transactional_db):
    key = demo.create_app("opt-out")[1]
    for name, body in (("marketing", {"label": "News and offers"}), ("security", {"required": True})):
        status, answer = demo.call(stack.api_url, key, "PUT", f"/api/v1/categories/{name}", body)
        assert status in (200, 201), answer
    return key


def new_recipient(stack, key) -> tuple[str, str]:
    user = f"r-{secrets.token_hex(4)}"
    email = f"{user}@example.com"
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}", {"email": email, "locale": "en"})
    assert status == 201, body
    return user, email


def send(stack, key, user: str, category: str) -> dict:
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                             {"recipient": user, "category": category, "content": EMAIL})
    assert status == 202, body
    return body["deliveries"][0]


def hold_back(stack, key, control, user: str, email: str) -> str:
    """Send a marketing email that SES refuses (503) until the fault is cleared; returns its
    delivery id once it has been tried and waits in ``retrying``."""
    control.add_fault(provider="ses", status=503, reason="ServiceUnavailable", to=email)
    delivery = send(stack, key, user, "marketing")
    assert delivery["status"] == "queued", delivery
    wait_until(lambda: Delivery.objects.filter(id=delivery["id"], status="retrying", attempts__gte=1).exists()
               and control.records("ses", delivery_id=delivery["id"]), timeout=20,
               message="the delivery to be tried and wait in retrying")
    return delivery["id"]


def assert_suppressed_and_never_sent(stack, key, control, user: str, delivery_id: str) -> None:
    """Lift the fault; the waiting delivery ends suppressed (opted out) and SES never took it;
    the next send is suppressed at the API; a required category still goes out."""
    # A retry claimed just before the opt-out was decided under the old preference and is in
    # flight; the decision holds from the next claim. Keep the fault until that claim is made
    # (the row passes its attempt, or ends), so the in-flight one meets the 503, not the provider.
    attempts = Delivery.objects.get(id=delivery_id).attempts
    wait_until(lambda: (d := Delivery.objects.get(id=delivery_id)).attempts > attempts or d.status in FINAL,
               timeout=20, message="a claim after the opt-out")
    control.clear_faults()
    row = wait_until(lambda: (d := Delivery.objects.get(id=delivery_id)).status in FINAL and d, timeout=20,
                     message="the held delivery to end")
    assert (row.status, row.reason) == ("suppressed", "opted_out")
    assert not control.records("ses", delivery_id=delivery_id, accepted=True)
    following = send(stack, key, user, "marketing")
    assert (following["status"], following["reason"]) == ("suppressed", "opted_out")
    required = send(stack, key, user, "security")
    assert required["status"] == "queued", required
    sent = wait_until(lambda: control.records("ses", delivery_id=required["id"], accepted=True), timeout=20,
                      message="the required email")
    # A sign-in code offers no way out: no unsubscribe header, no preference link.
    simple = sent[0]["body"]["Content"]["Simple"]
    assert "/preferences/" not in simple["Body"]["Text"]["Data"]
    assert "List-Unsubscribe" not in {h["Name"] for h in simple.get("Headers", [])}


def test_opt_out_through_the_api_suppresses_the_queued_delivery_and_the_next_send(stack, key, control):
    user, email = new_recipient(stack, key)
    held = hold_back(stack, key, control, user, email)
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}/preferences",
                             {"preferences": [{"channel": "email", "category": "marketing", "enabled": False}]})
    assert status == 200, body
    assert_suppressed_and_never_sent(stack, key, control, user, held)


def test_opt_out_through_the_admin_suppresses_the_queued_delivery_and_the_next_send(stack, key, control, client):
    user, email = new_recipient(stack, key)
    held = hold_back(stack, key, control, user, email)
    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.login(username="ops", password="pw-for-tests-only")
    recipient = Recipient.objects.get(external_id=user)
    response = client.post("/admin/notify/preference/add/", {
        "recipient": recipient.id, "channel": "email", "category": "marketing", "enabled": ""})
    assert response.status_code == 302, response.content[:2000]
    assert_suppressed_and_never_sent(stack, key, control, user, held)


def test_opt_out_through_the_preference_page_suppresses_the_queued_delivery_and_the_next_send(stack, key, control):
    user, email = new_recipient(stack, key)
    held = hold_back(stack, key, control, user, email)
    status, link = demo.call(stack.api_url, key, "GET", f"/api/v1/recipients/{user}/preference-link")
    assert status == 200 and link["url"].startswith(f"{PUBLIC_URL}/preferences/"), link
    page_url = stack.api_url + urllib.parse.urlsplit(link["url"]).path
    browser = requests.Session()
    page = browser.get(page_url, timeout=10)
    assert page.status_code == 200 and re.search(r'<input[^>]*name="c:marketing:email"[^>]* checked>', page.text)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    # The form as shown, with "News and offers" by email unticked.
    answer = browser.post(page_url, data={"csrfmiddlewaretoken": token, "ch:email": "on", "pause": "on"},
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text[:2000]
    assert_suppressed_and_never_sent(stack, key, control, user, held)


def test_a_pause_through_the_api_suppresses_the_queued_delivery_but_not_a_required_one(stack, key, control):
    user, email = new_recipient(stack, key)
    held = hold_back(stack, key, control, user, email)
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}", {"muted": True})
    assert status == 200 and body["muted"] is True, body
    control.clear_faults()
    row = wait_until(lambda: (d := Delivery.objects.get(id=held)).status in FINAL and d, timeout=20,
                     message="the held delivery to end")
    assert (row.status, row.reason) == ("suppressed", "muted")
    assert not control.records("ses", delivery_id=held, accepted=True)
    assert (lambda d: (d["status"], d["reason"]))(send(stack, key, user, "marketing")) == ("suppressed", "muted")
    required = send(stack, key, user, "security")
    wait_until(lambda: control.records("ses", delivery_id=required["id"], accepted=True), timeout=20,
               message="the required email")


def test_every_email_a_recipient_may_leave_links_the_preference_page(stack, key, control):
    user, _ = new_recipient(stack, key)
    delivery = send(stack, key, user, "marketing")
    record = wait_until(lambda: control.records("ses", delivery_id=delivery["id"], accepted=True), timeout=20,
                        message="the marketing email")[0]
    simple = record["body"]["Content"]["Simple"]
    text, html = simple["Body"]["Text"]["Data"], simple["Body"]["Html"]["Data"]
    match = re.search(rf"\n-- \nManage your notification preferences: ({re.escape(PUBLIC_URL)}/preferences/\S+)\n$",
                      text)
    assert match, text
    url = match.group(1)
    assert text.startswith("Our spring sale.")
    assert f'<a href="{url}">Manage your notification preferences</a></p></body></html>' in html
    headers = {h["Name"]: h["Value"] for h in simple["Headers"]}
    assert headers["List-Unsubscribe"].startswith(f"<{PUBLIC_URL}/unsubscribe/")
    # The link opens this recipient's page.
    page = requests.get(stack.api_url + urllib.parse.urlsplit(url).path, timeout=10)
    assert page.status_code == 200 and "Notification preferences" in page.text and 'name="ch:email"' in page.text

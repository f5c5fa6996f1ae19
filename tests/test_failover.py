"""A second provider behind one channel: with SES failing and SMTP configured as the email
channel's secondary, email deliveries go out through SMTP once SES's breaker opens, each exactly
once, and return to SES after it recovers."""

from __future__ import annotations

import time

import pytest

from devtools import demo
from notify.models import Delivery
from tests.conftest import wait_until
from tests.test_e2e import register

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

STACK_ENV = {"NOTIFY_EMAIL_SECONDARY_PROVIDER": "smtp", "NOTIFY_BREAKER_THRESHOLD": "3",
             "NOTIFY_BREAKER_COOLDOWN": "2", "NOTIFY_EMAIL_BACKOFF_MAX": "2", "NOTIFY_EMAIL_MAX_ATTEMPTS": "50"}


def send_emails(stack, key, user: str, count: int, tag: str) -> list[str]:
    ids = []
    for i in range(count):
        status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
            "recipient": user, "channels": ["email"],
            "content": {"email": {"subject": f"{tag} #{i} 주문", "text": f"hello {i}"}}})
        assert status == 202, body
        ids.append(body["deliveries"][0]["id"])
    return ids


def all_sent(ids: list[str]) -> dict[str, Delivery] | None:
    rows = {str(d.id): d for d in Delivery.objects.filter(id__in=ids)}
    return rows if all(d.status == "sent" for d in rows.values()) else None


def accepted_per_delivery(control, ids: list[str]) -> dict[str, list[str]]:
    """Which provider's wire carried each delivery, as the sandbox recorded it."""
    seen: dict[str, list[str]] = {i: [] for i in ids}
    for provider in ("ses", "smtp"):
        for record in control.records(provider):
            if record.get("accepted") and record.get("delivery_id") in seen:
                seen[record["delivery_id"]].append(provider)
    return seen


def test_email_fails_over_to_smtp_while_ses_is_down_and_comes_back(stack, control):
    key = demo.create_app("failover")[1]
    register(stack, key, control, "mail-user", email="user@xn--bcher-kva.example", platforms=())

    control.add_fault(provider="ses", status=503, reason="ServiceUnavailable")
    outage = send_emails(stack, key, "mail-user", 12, "outage")
    rows = wait_until(lambda: all_sent(outage), timeout=60, message="email through SMTP during the SES outage")
    carried = accepted_per_delivery(control, outage)
    assert all(len(providers) == 1 for providers in carried.values()), carried  # each exactly once
    assert {rows[i].provider for i in outage} <= {"ses", "smtp"}
    assert sum(rows[i].provider == "smtp" for i in outage) >= 9  # SES took none; its breaker opened after 3
    assert all(providers == [rows[i].provider] for i, providers in carried.items())

    control.clear_faults()
    time.sleep(3)  # the breaker's cooldown: the next SES call is the probe (one per second)
    (probe,) = send_emails(stack, key, "mail-user", 1, "probe")
    assert wait_until(lambda: all_sent([probe]), timeout=30, message="the probe")[probe].provider == "ses"
    time.sleep(1)  # workers trust their last look at a breaker for half a second
    recovered = send_emails(stack, key, "mail-user", 5, "recovered")
    rows = wait_until(lambda: all_sent(recovered), timeout=60, message="email after SES recovered")
    assert [rows[i].provider for i in recovered] == ["ses"] * 5
    carried = accepted_per_delivery(control, recovered + [probe])
    assert all(len(providers) == 1 for providers in carried.values()), carried

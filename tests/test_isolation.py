"""Channel isolation under a provider outage: APNs answers 503 for 60 s; push deliveries retry
with back-off and all complete after recovery, while email and SMS, on their own queues and
worker pools, keep their undisturbed latency (p95 within 10%).

The undisturbed latency is measured on both sides of the outage (half the window before it,
half after the recovery), so that what drifts on a shared machine during the test (a
checkpoint, a neighbour's load, tables growing) weighs on the baseline as on the outage."""

from __future__ import annotations

import statistics
import time

import pytest

from devtools import demo
from notify.models import REACHED_PROVIDER, Delivery, DeliveryLog
from tests.conftest import wait_until
from tests.test_e2e import register

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

STACK_ENV = {"NOTIFY_APNS_BACKOFF_MAX": "8", "NOTIFY_APNS_MAX_ATTEMPTS": "100"}
OUTAGE = 60.0  # seconds
RATE = 8.0  # notifications per second, each to apns + sms + email: 480 latencies a window and channel


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def send_for(stack, key, users: list[str], seconds: float) -> list[str]:
    """Send at a steady RATE for ``seconds``; returns the notification ids."""
    ids, start, i = [], time.monotonic(), 0
    while time.monotonic() - start < seconds:
        status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
            "recipient": users[i % len(users)], "channels": ["apns", "sms", "email"],
            "content": {"push": {"title": "알림", "body": f"#{i}"}, "sms": {"body": f"#{i} 🙂"},
                        "email": {"subject": f"#{i}", "text": "hello"}}})
        assert status == 202, body
        ids.append(body["id"])
        i += 1
        time.sleep(max(0.0, start + i / RATE - time.monotonic()))
    return ids


def latencies_ms(notification_ids: list[str], channels: tuple[str, ...]) -> list[float]:
    rows = Delivery.objects.filter(notification_id__in=notification_ids, channel__in=channels)
    assert all(r.status in REACHED_PROVIDER for r in rows), {
        r.channel: r.status for r in rows if r.status not in REACHED_PROVIDER}
    return [(r.sent_at - r.created_at).total_seconds() * 1000 for r in rows]


def all_sent(notification_ids, channels):
    return not Delivery.objects.filter(notification_id__in=notification_ids, channel__in=channels).exclude(
        status__in=REACHED_PROVIDER).exists()


def test_apns_down_60s_does_not_slow_email_and_sms(stack, control, transactional_db):
    key = demo.create_app("isolation")[1]
    users = []
    for i in range(10):
        user = f"iso-{i}"
        register(stack, key, control, user, phone=f"+8210{20000000 + i}", email=f"iso{i}@example.com",
                 platforms=("ios",))
        users.append(user)
    send_for(stack, key, users, 5)  # warm every pool and connection

    calm_before = send_for(stack, key, users, OUTAGE / 2)
    wait_until(lambda: all_sent(calm_before, ("apns", "sms", "email")), timeout=60, message="undisturbed sends")

    control.add_fault(provider="apns", status=503, reason="ServiceUnavailable")
    outage_started = time.monotonic()
    stormy = send_for(stack, key, users, OUTAGE)
    wait_until(lambda: all_sent(stormy, ("sms", "email")), timeout=60, message="email and SMS during the outage")
    assert not Delivery.objects.filter(notification_id__in=stormy, channel="apns", status__in=REACHED_PROVIDER).exists()
    control.clear_faults()
    outage = time.monotonic() - outage_started
    wait_until(lambda: all_sent(stormy, ("apns",)), timeout=60, message="push after recovery")
    calm_after = send_for(stack, key, users, OUTAGE / 2)
    wait_until(lambda: all_sent(calm_after, ("apns", "sms", "email")), timeout=60, message="sends after recovery")
    calm = calm_before + calm_after

    # Each push delivery of the outage waited: a provider 503, or the tripped circuit breaker
    # (then it was parked at accept time and never queued while the provider was down).
    waited = DeliveryLog.objects.filter(delivery__notification_id__in=stormy, delivery__channel="apns",
                                        to_status="retrying").values("delivery_id").distinct().count()
    assert waited == len(stormy) and outage >= OUTAGE
    reasons = set(DeliveryLog.objects.filter(delivery__notification_id__in=stormy, to_status="retrying")
                  .values_list("reason", flat=True))
    assert {"ServiceUnavailable", "circuit_open"} <= reasons
    provider_calls = DeliveryLog.objects.filter(delivery__notification_id__in=stormy, delivery__channel="apns",
                                                reason="ServiceUnavailable").count()
    print(f"apns during the outage: {len(stormy)} deliveries, {provider_calls} failed provider calls")
    for channel in ("email", "sms"):
        before, during = p95(latencies_ms(calm, (channel,))), p95(latencies_ms(stormy, (channel,)))
        print(f"{channel}: p95 undisturbed {before:.0f} ms (before {p95(latencies_ms(calm_before, (channel,))):.0f}, "
              f"after {p95(latencies_ms(calm_after, (channel,))):.0f}), during APNs outage {during:.0f} ms; "
              f"p50 {statistics.median(latencies_ms(calm, (channel,))):.0f} → {statistics.median(latencies_ms(stormy, (channel,))):.0f} ms")
        assert during <= before * 1.10, f"{channel} p95 went from {before:.0f} ms to {during:.0f} ms"

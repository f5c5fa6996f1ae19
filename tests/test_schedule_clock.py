"""Held and scheduled deliveries across the 2026 daylight-saving changes, on a controllable clock:
each send is accepted (notify.accept.plan, at an instant the test gives) and written as the API
writes it, then the dispatcher (notify.maintenance.dispatch_due, with ``now`` stepped minute by
minute) must release each delivery exactly once, at the minute it is due and not before; the
worker's own check at that instant (notify.policy.at_send on the claimed row) lets it go, and a
minute earlier would have held it until the same instant. A cancelled one is never released.

The changes: America/New_York 2026-03-08 02:00 → 03:00 and 2026-11-01 02:00 → 01:00;
Europe/Berlin 2026-03-29 02:00 → 03:00 and 2026-10-25 03:00 → 02:00; Asia/Seoul has none.

Runs on the test database inside the test's transaction, so no dispatcher of another process
sees these rows (they are due in the past by the real clock).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from devtools import demo
from notify import accept, maintenance, policy, send, store
from notify.models import Category, Delivery, DeliveryLog, Recipient

MINUTE = dt.timedelta(minutes=1)
UTC = dt.timezone.utc


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """One send: accepted at ``accepted`` (UTC) by a recipient in ``zone`` whose quiet hours are
    set on the recipient, the category or the app (``where``), optionally with ``send_at``
    (RFC 3339); it must be released at ``release`` (UTC) with ``reason``."""

    label: str
    zone: str
    window: str
    where: str
    accepted: str
    release: str
    reason: str = "quiet_hours"
    send_at: str | None = None


CASES = {
    "America/New_York": [
        Case("spring: end 02:30 is skipped, released at the change", "America/New_York", "22:00-02:30", "recipient",
             "2026-03-08 06:40", "2026-03-08 07:00"),
        Case("spring: overnight to 07:00 EDT", "America/New_York", "22:00-07:00", "app",
             "2026-03-08 03:00", "2026-03-08 11:00"),
        Case("fall: end 01:30 read twice, released at the first (EDT)", "America/New_York", "22:00-01:30", "category",
             "2026-11-01 05:05", "2026-11-01 05:30"),
        Case("fall: overnight to 08:00 EST", "America/New_York", "22:00-08:00", "recipient",
             "2026-11-01 03:00", "2026-11-01 13:00"),
        Case("fall: send_at 01:30 EDT (first reading)", "America/New_York", "", "recipient",
             "2026-11-01 04:00", "2026-11-01 05:30", "scheduled", "2026-11-01T01:30:00-04:00"),
        Case("fall: send_at 01:30 EST (second reading)", "America/New_York", "", "recipient",
             "2026-11-01 04:00", "2026-11-01 06:30", "scheduled", "2026-11-01T01:30:00-05:00"),
        Case("spring: send_at 01:50 EST falls in quiet hours ending in the gap", "America/New_York", "01:45-02:15",
             "recipient", "2026-03-08 05:00", "2026-03-08 07:00", "quiet_hours", "2026-03-08T01:50:00-05:00"),
    ],
    "Europe/Berlin": [
        Case("spring: end 02:30 is skipped, released at the change", "Europe/Berlin", "23:00-02:30", "category",
             "2026-03-29 00:40", "2026-03-29 01:00"),
        Case("spring: overnight to 07:00 CEST", "Europe/Berlin", "22:00-07:00", "app",
             "2026-03-28 22:00", "2026-03-29 05:00"),
        Case("fall: end 02:30 read twice, released at the first (CEST)", "Europe/Berlin", "22:00-02:30", "recipient",
             "2026-10-25 00:05", "2026-10-25 00:30"),
        Case("fall: end 03:00 after both readings of 02:xx", "Europe/Berlin", "22:00-03:00", "recipient",
             "2026-10-25 00:05", "2026-10-25 02:00"),
        Case("fall: overnight to 07:00 CET", "Europe/Berlin", "22:00-07:00", "app",
             "2026-10-24 21:00", "2026-10-25 06:00"),
        Case("spring: send_at 03:00 CEST, right after the gap", "Europe/Berlin", "", "recipient",
             "2026-03-28 23:00", "2026-03-29 01:00", "scheduled", "2026-03-29T03:00:00+02:00"),
    ],
    "Asia/Seoul": [
        Case("March: overnight to 08:00 KST", "Asia/Seoul", "22:00-08:00", "recipient",
             "2026-03-08 14:00", "2026-03-08 23:00"),
        Case("October: overnight to 08:00 KST", "Asia/Seoul", "22:00-08:00", "category",
             "2026-10-25 15:30", "2026-10-25 23:00"),
        Case("November: lunch break", "Asia/Seoul", "12:00-13:30", "app",
             "2026-11-01 03:10", "2026-11-01 04:30"),
        Case("send_at 09:00 KST", "Asia/Seoul", "", "recipient",
             "2026-10-31 20:00", "2026-11-01 00:00", "scheduled", "2026-11-01T09:00:00+09:00"),
    ],
}


def _accept(case: Case, index: int) -> tuple[str, dict]:
    """Set the case's quiet hours where it says (an app, category and recipient of its own),
    accept an SMS for its recipient at its instant and write it; returns (delivery id, the 202
    body's delivery)."""
    app = demo.create_app(f"clock-{index}")[0]
    external_id, category_name = f"clock-{index}", f"cat-{index}"
    Recipient.objects.create(app=app, external_id=external_id, timezone=case.zone, phone="+12025550100",
                             quiet_hours=case.window if case.where == "recipient" else "")
    Category.objects.update_or_create(app=app, name=category_name, defaults={
        "quiet_hours": case.window if case.where == "category" else ""})
    app.quiet_hours = case.window if case.where == "app" else ""
    app.save()
    payload = {"recipient": external_id, "content": {"sms": {"body": case.label}}, "channels": ["sms"],
               "category": category_name, "ttl": 3600}
    if case.send_at:
        payload["send_at"] = dt.datetime.fromisoformat(case.send_at)
    planned = accept.plan(app.id, None, payload, None, now=utc(case.accepted))
    accept.write([planned])
    (delivery,) = planned.body["deliveries"]
    return delivery["id"], delivery


def _steps(cases: list[Case]) -> list[dt.datetime]:
    """Every minute from 90 minutes before each release to 15 after, plus each acceptance."""
    instants = {utc(case.accepted) for case in cases}
    for case in cases:
        release = utc(case.release)
        instants.update(release + k * MINUTE for k in range(-90, 16))
    return sorted(instants)


@pytest.mark.parametrize("zone", sorted(CASES))
def test_each_held_or_scheduled_delivery_is_released_once_at_its_minute(app_key, zone):
    cases = CASES[zone]
    ids = {}
    for index, case in enumerate(cases):
        delivery_id, body = _accept(case, index)
        ids[delivery_id] = case
        assert (body["status"], body["reason"]) == ("scheduled", case.reason), case.label
        assert body["scheduled_for"] == case.release.replace(" ", "T") + ":00Z", case.label

    released: dict[str, list[dt.datetime]] = {delivery_id: [] for delivery_id in ids}
    for now in _steps(cases):
        maintenance.dispatch_due(now=now)
        for delivery_id in Delivery.objects.filter(id__in=ids, status="queued").values_list("id", flat=True):
            if not released[str(delivery_id)]:
                released[str(delivery_id)].append(now)
                # Released: the worker's own check at this instant lets it go, and the same row
                # claimed a minute earlier would have been held until exactly now.
                claim = send.claim(str(delivery_id))
                case = ids[str(delivery_id)]
                assert policy.at_send(claim, now).action == policy.SEND, case.label
                if case.reason == "quiet_hours":
                    early = policy.at_send(claim, now - MINUTE)
                    assert (early.action, early.until) == (policy.DEFER, now), case.label
    for delivery_id, case in ids.items():
        assert released[delivery_id] == [utc(case.release)], case.label
        moves = DeliveryLog.objects.filter(delivery_id=delivery_id, from_status="scheduled", to_status="queued")
        assert list(moves.values_list("reason", flat=True)) == ["due"], case.label


def test_a_cancelled_delivery_is_never_released(app_key):
    case = CASES["America/New_York"][0]
    delivery_id, _ = _accept(case, 0)
    delivery = Delivery.objects.select_related("notification").get(id=delivery_id)
    assert store.cancel(delivery.notification.app_id, delivery.notification_id) == [delivery.id]
    for now in _steps([case]):
        assert maintenance.dispatch_due(now=now) == 0
    assert Delivery.objects.get(id=delivery_id).status == "cancelled"
    assert not DeliveryLog.objects.filter(delivery_id=delivery_id, to_status="queued").exists()


def test_without_a_clock_the_dispatcher_reads_the_databases(app_key):
    # Due long ago by the real clock: the production call (no ``now``) releases it at once.
    case = CASES["Asia/Seoul"][0]
    delivery_id, _ = _accept(case, 0)
    assert maintenance.dispatch_due(now=utc(case.release) - MINUTE) == 0
    assert maintenance.dispatch_due() == 1
    assert Delivery.objects.get(id=delivery_id).status == "queued"

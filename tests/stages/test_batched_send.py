"""Batched sends (notify.send.send_batch): a wave of a task's deliveries is claimed in one
statement, sent concurrently within each provider's limit (``NOTIFY_SEND_CONCURRENCY``), and
its outcomes are written in one statement, against a real provider sandbox."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import threading
import time

import pytest
from django.utils import timezone

from channels.fcm import FCMChannel
from channels.twilio_sms import TwilioSMSChannel
from devtools import demo
from notify import send, store
from notify.models import Delivery, DeliveryLog, Device

pytestmark = pytest.mark.django_db(transaction=True)

#: The sandbox's answer delay in the overlap tests (milliseconds).
DELAY_MS = 400


def accept(api, user, body, **profile):
    api.put(f"/api/v1/recipients/{user}", profile, format="json")
    r = api.post("/api/v1/notifications", {"recipient": user, **body}, format="json")
    assert r.status_code == 202, r.content
    return r.json()["deliveries"]


def sms_batch(api, prefix: str, n: int) -> list[str]:
    """``n`` queued SMS deliveries, one per recipient."""
    return [accept(api, f"{prefix}{i}", {"content": {"sms": {"body": f"code {i}"}}},
                   phone=f"+1415555{i:04d}")[0]["id"] for i in range(n)]


@contextlib.contextmanager
def statements(monkeypatch):
    """The SQL texts the store runs inside the block, in order."""
    ran: list[str] = []
    original = store._PreparingCursor.execute

    def execute(self, query, params=None, **kwargs):
        ran.append(query)
        return original(self, query, params, **kwargs)

    monkeypatch.setattr(store._PreparingCursor, "execute", execute)
    yield ran
    monkeypatch.setattr(store._PreparingCursor, "execute", original)


@contextlib.contextmanager
def in_flight(monkeypatch, cls):
    """The largest number of ``cls.deliver`` calls running at once inside the block."""
    seen = {"now": 0, "max": 0}
    lock = threading.Lock()
    original = cls.deliver

    def deliver(self, message):
        with lock:
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        try:
            return original(self, message)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(cls, "deliver", deliver)
    yield seen
    monkeypatch.setattr(cls, "deliver", original)


def claims_and_outcomes(ran: list[str]) -> tuple[int, int]:
    return (sum(q in (store._CLAIM_SQL, store._CLAIM_BATCH_SQL, store._CLAIM_SPAN_SQL) for q in ran),
            sum(q in (store._RECORD_SQL, store._RECORD_BATCH_SQL, store._RECORD_SPAN_SQL) for q in ran))


def test_a_batch_of_plain_sends_is_one_claim_and_one_outcome_statement(api, ctl, settings, monkeypatch):
    settings.NOTIFY_SEND_CONCURRENCY = {**settings.NOTIFY_SEND_CONCURRENCY, "twilio": 8}
    ids = sms_batch(api, "b1-", 8)
    with statements(monkeypatch) as ran:
        assert send.send_batch(ids, "sms") == {"sent": 8}
    assert claims_and_outcomes(ran) == (1, 1)
    # Both name the rows' partitions: the claim by its ids' span, the outcomes by their rows' own.
    assert store._CLAIM_SPAN_SQL in ran and store._RECORD_SPAN_SQL in ran
    assert {r["delivery_id"] for r in ctl.records("twilio", accepted=True)} == set(ids)
    for delivery in Delivery.objects.filter(id__in=ids):
        assert (delivery.status, delivery.provider, delivery.attempts) == ("sent", "twilio", 1)
        assert delivery.provider_message_id.startswith("SM") and delivery.lease_until is None
        log = list(DeliveryLog.objects.filter(delivery_id=delivery.id).order_by("id")
                   .values_list("from_status", "to_status", "attempt"))
        assert log[-2:] == [("queued", "sending", 1), ("sending", "sent", 1)]
    # A duplicate task finds nothing to claim (in the ids' span, then anywhere), and writes nothing.
    with statements(monkeypatch) as ran:
        assert send.send_batch(ids, "sms") == {}
    assert claims_and_outcomes(ran) == (2, 0)


def test_the_sends_of_a_batch_overlap(api, ctl, settings):
    settings.NOTIFY_SEND_CONCURRENCY = {**settings.NOTIFY_SEND_CONCURRENCY, "twilio": 6}
    ids = sms_batch(api, "b2-", 6)
    ctl.add_fault(provider="twilio", latency_ms=DELAY_MS)
    started = time.monotonic()
    assert send.send_batch(ids, "sms") == {"sent": 6}
    elapsed = time.monotonic() - started
    # One after the other they take 6 × 0.4 s; together about one delay.
    assert elapsed < 6 * DELAY_MS / 1000 / 2, elapsed


def test_the_per_provider_limit_is_honoured(api, ctl, settings, monkeypatch):
    settings.NOTIFY_SEND_CONCURRENCY = {**settings.NOTIFY_SEND_CONCURRENCY, "twilio": 2}
    ids = sms_batch(api, "b3-", 6)
    ctl.add_fault(provider="twilio", latency_ms=DELAY_MS)
    started = time.monotonic()
    with in_flight(monkeypatch, TwilioSMSChannel) as seen, statements(monkeypatch) as ran:
        # No channel given: the whole batch is one wave, and only the limit spaces the sends.
        assert send.send_batch(ids) == {"sent": 6}
    elapsed = time.monotonic() - started
    assert seen["max"] == 2
    assert elapsed >= 3 * DELAY_MS / 1000, elapsed
    assert claims_and_outcomes(ran) == (1, 1)


def test_a_channels_batch_goes_in_waves_of_its_limit(api, ctl, settings, monkeypatch):
    settings.NOTIFY_SEND_CONCURRENCY = {**settings.NOTIFY_SEND_CONCURRENCY, "twilio": 3}
    ids = sms_batch(api, "b4-", 7)
    with in_flight(monkeypatch, TwilioSMSChannel) as seen, statements(monkeypatch) as ran:
        assert send.send_batch(ids, "sms") == {"sent": 7}
    assert seen["max"] <= 3
    assert claims_and_outcomes(ran) == (3, 3)


def test_mixed_outcomes_of_one_batch_are_all_recorded(api, ctl, settings, monkeypatch):
    settings.NOTIFY_SEND_CONCURRENCY = {**settings.NOTIFY_SEND_CONCURRENCY, "fcm": 4}
    api.put("/api/v1/recipients/b5", {}, format="json")
    tokens = [demo.fcm_token() for _ in range(3)]
    for token in tokens:
        api.post("/api/v1/recipients/b5/devices", {"platform": "android", "token": token}, format="json")
    ok, dead, busy = tokens
    ctl.kill_token("fcm", dead)
    ctl.add_fault(provider="fcm", status=503, reason="UNAVAILABLE", to=busy, retry_after=5)
    deliveries = {d["to"]: d["id"] for d in accept(api, "b5", {"content": {"push": {"title": "t"}}})}
    # A fourth delivery whose recipient opted out after the send was accepted.
    api.put("/api/v1/recipients/b5-out", {}, format="json")
    api.post("/api/v1/recipients/b5-out/devices", {"platform": "android", "token": demo.fcm_token()},
             format="json")
    (out,) = accept(api, "b5-out", {"content": {"push": {"title": "t"}}})
    api.put("/api/v1/recipients/b5-out/preferences", {"preferences": [{"channel": "fcm", "enabled": False}]},
            format="json")
    ids = [deliveries[ok], deliveries[dead], deliveries[busy], out["id"]]

    with statements(monkeypatch) as ran, in_flight(monkeypatch, FCMChannel) as seen:
        outcomes = send.send_batch(ids, "fcm")
    assert outcomes == {"sent": 1, "failed": 1, "retrying": 1, "suppressed": 1}
    assert seen["max"] == 3  # the suppressed one never reached the provider
    assert claims_and_outcomes(ran) == (1, 1)
    rows = {str(d.id): d for d in Delivery.objects.filter(id__in=ids)}
    assert (rows[deliveries[ok]].status, rows[deliveries[ok]].provider) == ("sent", "fcm")
    assert (rows[deliveries[dead]].status, rows[deliveries[dead]].reason) == ("failed", "UNREGISTERED")
    busy_row = rows[deliveries[busy]]
    assert (busy_row.status, busy_row.reason, busy_row.attempts) == ("retrying", "UNAVAILABLE", 1)
    assert busy_row.next_attempt_at > rows[deliveries[ok]].updated_at  # Retry-After: 5 s
    assert (rows[out["id"]].status, rows[out["id"]].reason) == ("suppressed", "opted_out")
    assert {d.token: d.active for d in Device.objects.filter(recipient__external_id="b5")} == {
        ok: True, dead: False, busy: True}
    for delivery_id, status in ((deliveries[ok], "sent"), (deliveries[dead], "failed"),
                                (deliveries[busy], "retrying"), (out["id"], "suppressed")):
        last = DeliveryLog.objects.filter(delivery_id=delivery_id).order_by("-id").first()
        assert (last.from_status, last.to_status) == ("sending", status)
    assert not ctl.records("fcm", delivery_id=out["id"])


def test_an_error_in_one_send_does_not_lose_the_others(api, ctl, settings, monkeypatch):
    settings.NOTIFY_SEND_CONCURRENCY = {**settings.NOTIFY_SEND_CONCURRENCY, "twilio": 4}
    ids = sms_batch(api, "b6-", 4)
    original = TwilioSMSChannel.deliver
    broken = secrets.token_hex(4)

    def deliver(self, message):
        if message.delivery_id == ids[1]:
            raise RuntimeError(broken)
        return original(self, message)

    monkeypatch.setattr(TwilioSMSChannel, "deliver", deliver)
    with pytest.raises(RuntimeError, match=broken):
        send.send_batch(ids, "sms")
    statuses = dict(Delivery.objects.filter(id__in=ids).values_list("id", "status"))
    # The failing one is left to its lease (as a worker dying mid-send); the others are recorded.
    assert [statuses[Delivery.objects.get(id=i).id] for i in ids] == ["sent", "sending", "sent", "sent"]


def test_an_error_while_deciding_releases_the_undecided_unsent(api, ctl, settings, monkeypatch):
    settings.NOTIFY_SEND_CONCURRENCY = {**settings.NOTIFY_SEND_CONCURRENCY, "twilio": 4}
    ids = sms_batch(api, "b7-", 4)
    original = send.at_send
    broken = secrets.token_hex(4)

    def at_send(c, now):
        if str(c.id) == ids[1]:
            raise RuntimeError(broken)  # e.g. Redis gone while counting a rate limit
        return original(c, now)

    monkeypatch.setattr(send, "at_send", at_send)
    with pytest.raises(RuntimeError, match=broken):
        send.send_batch(ids, "sms")
    rows = {str(d.id): d for d in Delivery.objects.filter(id__in=ids)}
    assert rows[ids[0]].status == "sent"
    assert rows[ids[1]].status == "sending"  # left to its lease
    for delivery_id in ids[2:]:
        # Back to the dispatcher at once, the attempt given back, the provider never called.
        assert (rows[delivery_id].status, rows[delivery_id].reason, rows[delivery_id].attempts) == (
            "retrying", send.RELEASED, 0)
        assert not ctl.records("twilio", delivery_id=delivery_id)


def test_the_limits_are_declared_by_the_adapters_and_overridable():
    from channels import registry
    from settings.providers import _send_concurrency

    limits = _send_concurrency("")
    assert limits == {p: cls.send_concurrency for p, cls in registry.providers().items()}
    assert limits["smtp"] == 1  # smtplib is not thread-safe
    assert _send_concurrency("twilio=8, smtp=1")["twilio"] == 8
    for bad in ("twilio=0", "twilio", "nope=3", "twilio=x"):
        with pytest.raises(ValueError, match="NOTIFY_SEND_CONCURRENCY"):
            _send_concurrency(bad)


class _RolledBack(Exception):
    pass


def test_a_claim_looks_in_the_partitions_of_its_ids_span_only(api, ctl):
    """Accepted ids are UUIDv7: the claim names the day partitions their times may be in, and
    PostgreSQL's plan leaves the others out (notify.ids.span, notify.store._CLAIM_SPAN_SQL)."""
    from django.db import connection, transaction

    from notify import ids as ids_module

    delivery_ids = sms_batch(api, "span-", 3)
    assert all(ids_module.written_at(d) is not None for d in delivery_ids)
    bounds = ids_module.span(delivery_ids)

    def partitions_scanned(sql, params):
        """The delivery partitions the claim's plan ran a scan of (EXPLAIN ANALYZE, rolled back)."""
        scanned: set[str] = set()

        def walk(node):
            if node.get("Relation Name", "").startswith("notify_delivery_") and node.get("Actual Loops", 0) > 0:
                scanned.add(node["Relation Name"])
            for child in node.get("Plans", ()):
                walk(child)

        with contextlib.suppress(_RolledBack), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
            raise _RolledBack
        return scanned

    spanned = partitions_scanned(store._CLAIM_SPAN_SQL, [delivery_ids, *bounds, 60])
    everywhere = partitions_scanned(store._CLAIM_BATCH_SQL, [delivery_ids, 60])
    assert 1 <= len(spanned) <= 2 < len(everywhere), (spanned, everywhere)


def test_a_row_outside_its_ids_span_is_still_claimed_and_sent_once(api, ctl, monkeypatch):
    """A row whose created_at strayed from its id's time (a clock off by days) is not in the
    span's partitions: the claim's second look-up everywhere finds it."""
    delivery_ids = sms_batch(api, "stray-", 2)
    Delivery.objects.filter(id=delivery_ids[0]).update(created_at=timezone.now() - dt.timedelta(days=3))
    with statements(monkeypatch) as ran:
        assert send.send_batch(delivery_ids, "sms") == {"sent": 2}
    assert claims_and_outcomes(ran) == (2, 1)
    assert sorted(r["delivery_id"] for r in ctl.records("twilio", accepted=True)) == sorted(delivery_ids)

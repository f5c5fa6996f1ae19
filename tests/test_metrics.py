"""Prometheus metrics through the whole stack: ``/metrics`` on the API (gunicorn, two workers)
adds up what every process wrote (two API workers, a prefork pool of two per channel), counters
move by exactly what a known run did, and the queue gauges come from RabbitMQ."""

from __future__ import annotations

import concurrent.futures
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from devtools import demo
from tests.conftest import wait_until
from tests.test_e2e import register, wait_final
from notify.models import REACHED_PROVIDER

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]
#: Email gives up after two throttled calls, quickly, for the dead-letter count.
STACK_ENV = {"NOTIFY_EMAIL_MAX_ATTEMPTS": "2", "NOTIFY_EMAIL_BACKOFF_MAX": "1"}

CHANNELS = ["sms", "email", "apns"]
CONTENT = {"push": {"title": "Hi", "body": "metrics"}, "sms": {"body": "metrics"},
           "email": {"subject": "metrics", "text": "metrics"}}


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("metrics")[1]


def scrape(stack, headers: dict | None = None) -> dict[tuple, float]:
    """``{(sample name, ((label, value), ...)): value}`` of one GET /metrics."""
    request = urllib.request.Request(stack.api_url + "/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def deltas(before: dict, after: dict, name: str) -> dict[tuple, float]:
    """Samples of ``name`` that changed, by their labels."""
    return {labels: after[(n, labels)] - before.get((n, labels), 0.0) for (n, labels) in after
            if n == name and after[(n, labels)] != before.get((n, labels), 0.0)}


def label_dict(changed: dict[tuple, float]) -> dict[tuple, float]:
    return {tuple(v for _, v in labels): delta for labels, delta in changed.items()}


def writers(stack, name: str) -> int:
    """How many processes' sample files hold a non-zero ``name`` sample."""
    count = 0
    for path in Path(stack.metrics_dir).glob("counter_*.db"):
        merged = multiprocess.MultiProcessCollector.merge([str(path)], accumulate=True)
        if any(s.value for m in merged if m.name == name for s in m.samples if s.name == name + "_total"):
            count += 1
    return count


def test_counters_move_by_exactly_what_a_run_did_across_processes(stack, key, control):
    register(stack, key, control, "m1", phone="+821055501234", email="metrics.one@example.com", platforms=("ios",))
    register(stack, key, control, "m2", phone="+821055505678", email="metrics.two@example.com", platforms=())
    before = scrape(stack)

    # One email the provider refuses for good, then ten sends on three channels in parallel
    # (several API workers answer them), one SMS answered 503 once (retried, then sent).
    control.add_fault(provider="ses", status=400, reason="MessageRejected", count=1)
    status, refused_by_ses = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                       {"recipient": "m2", "channels": ["email"], "content": CONTENT})
    assert status == 202
    assert wait_final(stack, key, refused_by_ses["id"])["deliveries"][0]["status"] == "failed"
    control.add_fault(provider="twilio", status=503, count=1)

    def send(i: int) -> str:
        status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                 {"recipient": "m1", "channels": CHANNELS, "content": CONTENT})
        assert status == 202, body
        return body["id"]

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        ids = list(pool.map(send, range(10)))
    for notification_id in ids:
        final = wait_final(stack, key, notification_id, timeout=60)
        assert {d["status"] for d in final["deliveries"]} <= REACHED_PROVIDER, final
    # Refusals: two unknown recipients, one invalid body.
    for body in ({"recipient": "nobody", "content": CONTENT}, {"recipient": "nobody2", "content": CONTENT},
                 {"content": CONTENT}):
        assert demo.call(stack.api_url, key, "POST", "/api/v1/notifications", body)[0] in (400, 404)
    after = scrape(stack)

    assert value(after, "notify_notifications_accepted_total") - value(before, "notify_notifications_accepted_total") == 11
    assert label_dict(deltas(before, after, "notify_notifications_refused_total")) == {
        ("recipient_not_found",): 2, ("invalid_request",): 1}
    changed = label_dict(deltas(before, after, "notify_deliveries_total"))  # (channel, provider, reason, status)
    retried = {k: v for k, v in changed.items() if k[3] == "retrying"}
    assert list(retried.values()) == [1] and list(retried)[0][:2] == ("sms", "twilio"), changed
    assert {k: v for k, v in changed.items() if k[3] != "retrying"} == {
        ("sms", "", "", "queued"): 10, ("email", "", "", "queued"): 11, ("apns", "", "", "queued"): 10,
        ("sms", "twilio", "", "sent"): 10, ("email", "ses", "", "sent"): 10, ("apns", "apns", "", "sent"): 10,
        ("email", "ses", "MessageRejected", "failed"): 1,
    }
    calls = label_dict(deltas(before, after, "notify_provider_call_seconds_count"))
    assert calls == {("sms", "twilio"): 11, ("email", "ses"): 11, ("apns", "apns"): 10}
    assert label_dict(deltas(before, after, "notify_accept_to_sent_seconds_count")) == {
        ("sms",): 10, ("email",): 10, ("apns",): 10}
    # Every sent delivery's latency is in a bucket: the +Inf bucket moved as much as the count.
    assert value(after, "notify_provider_call_seconds_bucket", channel="apns", provider="apns", le="+Inf") - \
        value(before, "notify_provider_call_seconds_bucket", channel="apns", provider="apns", le="+Inf") == 10

    # The sums came from several processes: both API workers accepted, and each channel's
    # pool (a process of its own at least) recorded deliveries.
    assert writers(stack, "notify_notifications_accepted") >= 2
    assert writers(stack, "notify_deliveries") >= 2 + len(CHANNELS)

    # Receipts: the sandbox's Twilio reports each SMS sent, then delivered (signed callbacks to
    # the API's workers): one event of each kind per delivery, whichever worker took it.
    def sms_receipts():
        events = {k: v for k, v in label_dict(deltas(before, scrape(stack), "notify_delivery_events_total")).items()
                  if k[0] == "sms"}  # (channel, kind, source)
        return events if events.get(("sms", "delivered", "twilio")) == 10 else None

    assert wait_until(sms_receipts, timeout=30, message="ten SMS reported delivered") == {
        ("sms", "sent", "twilio"): 10, ("sms", "delivered", "twilio"): 10}


def test_suppressed_expired_dead_lettered_and_opened_move_their_own_counters(stack, key, control):
    """The outcomes the first run has none of: suppressed at accept (by reason), expired out of a
    retry, dead-lettered after the retry budget, and a push open reported through the API."""
    register(stack, key, control, "m3", phone="+821055509012", email="metrics.three@example.com",
             platforms=("ios",))
    status, _ = demo.call(stack.api_url, key, "PUT", "/api/v1/recipients/m3/preferences",
                          {"preferences": [{"channel": "sms", "enabled": False}]})
    assert status == 200
    before = scrape(stack)

    def post(body) -> dict:
        status, answer = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {"recipient": "m3", **body})
        assert status == 202, answer
        return wait_final(stack, key, answer["id"], timeout=60)["deliveries"][0]

    assert post({"channels": ["sms"], "content": CONTENT})["reason"] == "opted_out"
    control.add_fault(provider="apns", status=503, retry_after=3, count=1)
    expired = post({"channels": ["apns"], "content": CONTENT, "ttl": 2})
    control.add_fault(provider="ses", status=429, reason="TooManyRequestsException", count=2)
    dead = post({"channels": ["email"], "content": CONTENT})
    opened = post({"channels": ["apns"], "content": CONTENT})
    assert [expired["status"], dead["status"], opened["status"]] == ["expired", "dead_lettered", "sent"]
    assert demo.call(stack.api_url, key, "POST", f"/api/v1/deliveries/{opened['id']}/opened", {})[0] == 200
    after = scrape(stack)

    assert value(after, "notify_notifications_accepted_total") - value(before, "notify_notifications_accepted_total") == 4
    changed = label_dict(deltas(before, after, "notify_deliveries_total"))  # (channel, provider, reason, status)
    assert changed == {
        ("sms", "", "opted_out", "suppressed"): 1,
        ("apns", "", "", "queued"): 2, ("apns", "apns", "ServiceUnavailable", "retrying"): 1,
        ("apns", "", "ttl_elapsed", "expired"): 1, ("apns", "apns", "", "sent"): 1,
        ("email", "", "", "queued"): 1, ("email", "ses", "TooManyRequestsException", "retrying"): 1,
        ("email", "ses", "retries_exhausted", "dead_lettered"): 1,
    }, changed
    assert label_dict(deltas(before, after, "notify_delivery_events_total")) == {("apns", "opened", "api"): 1}


def test_metrics_is_closed_to_other_networks_without_the_token(stack, settings):
    """The stack's API runs with the default NOTIFY_METRICS_ALLOW (loopback): a scrape from
    127.0.0.1 is open; the view refuses others (Django's test client comes from 127.0.0.1 too,
    so the refusal is checked through the view's rule)."""
    from django.test import RequestFactory

    from notify.monitoring import metrics_allowed

    assert scrape(stack)
    factory = RequestFactory()
    assert metrics_allowed(factory.get("/metrics", REMOTE_ADDR="127.0.0.1"))
    assert not metrics_allowed(factory.get("/metrics", REMOTE_ADDR="203.0.113.9"))
    settings.NOTIFY_METRICS_TOKEN = "s3cret-token"
    assert metrics_allowed(factory.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-token"))
    assert not metrics_allowed(factory.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer wrong"))
    settings.NOTIFY_METRICS_ALLOW = ["10.0.0.0/8"]
    assert metrics_allowed(factory.get("/metrics", REMOTE_ADDR="10.1.2.3"))
    assert not metrics_allowed(factory.get("/metrics", REMOTE_ADDR="127.0.0.1"))


def test_queue_depth_rises_while_a_channels_workers_are_stopped_and_falls_after(stack, key, control):
    register(stack, key, control, "q1", phone="+821055509999", email="metrics.q@example.com", platforms=())
    stack.stop_worker("sms")
    try:
        wait_until(lambda: value(scrape(stack), "notify_queue_consumers", queue="sms", channel="sms") == 0,
                   timeout=30, message="no consumer on sms")
        ids = []
        for _ in range(3):
            status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                     {"recipient": "q1", "channels": ["sms"], "content": CONTENT})
            assert status == 202
            ids.append(body["id"])
        def risen():
            s = scrape(stack)
            return s if (value(s, "notify_queue_messages", queue="sms", channel="sms") >= 1
                         and value(s, "notify_queue_oldest_message_age_seconds", queue="sms", channel="sms") >= 2) else None

        samples = wait_until(risen, timeout=30, message="the sms queue's depth and age to rise")
        assert 1 <= value(samples, "notify_queue_messages", queue="sms", channel="sms") <= 3
        # Published, so not in the outbox; the other channels' queues stay empty.
        assert value(samples, "notify_outbox_deliveries", channel="sms") == 0
        assert value(samples, "notify_queue_messages", queue="email", channel="email") == 0
        assert value(samples, "notify_queue_consumers", queue="email", channel="email") >= 1
    finally:
        stack.start_worker("sms")
    for notification_id in ids:
        assert wait_final(stack, key, notification_id, timeout=60)["deliveries"][0]["status"] in REACHED_PROVIDER
    def drained():
        s = scrape(stack)
        return (value(s, "notify_queue_messages", queue="sms", channel="sms") == 0
                and value(s, "notify_queue_oldest_message_age_seconds", queue="sms", channel="sms") == 0
                and value(s, "notify_queue_consumers", queue="sms", channel="sms") >= 1)

    wait_until(drained, timeout=30, message="the sms queue to drain")


def test_live_gauges_report_breakers_relays_and_sources(stack):
    from notify import breaker

    samples = scrape(stack)
    assert value(samples, "notify_relays") == 1
    for source in ("rabbitmq", "postgresql", "redis"):
        assert value(samples, "notify_metrics_source_up", source=source) == 1
    for provider in ("apns", "fcm", "webpush", "twilio", "ses"):
        assert value(samples, "notify_circuit_breaker_state", scope=provider, state="closed") == 1
    assert value(samples, "notify_queue_consumers", queue="maintenance", channel="") >= 1

    # A push service's breaker trips (as the workers would trip it): it appears, open.
    scope = "push.metrics-test.example"
    try:
        while not breaker.record_failure(scope):
            pass
        samples = scrape(stack)
        assert value(samples, "notify_circuit_breaker_state", scope=scope, state="open") == 1
        assert value(samples, "notify_circuit_breaker_state", scope=scope, state="closed") == 0
    finally:
        breaker.record_success(scope)
    assert value(scrape(stack), "notify_circuit_breaker_state", scope=scope, state="closed") == 1
    from django_redis import get_redis_connection

    get_redis_connection("default").zrem(breaker.tripped_scopes_key(), scope)  # not listed for other tests

    # No relay: the gauge falls to 0 within the announcement's lifetime, and comes back.
    stack.stop_relay()
    try:
        wait_until(lambda: value(scrape(stack), "notify_relays") == 0, timeout=40, interval=1,
                   message="notify_relays to fall to 0")
    finally:
        stack.start_relay()
    wait_until(lambda: value(scrape(stack), "notify_relays") == 1, timeout=20, interval=0.5,
               message="notify_relays back to 1")

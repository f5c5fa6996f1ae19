"""The store (notify.store): the hand-written statements, each one round trip, with the delivery
log and the preferences each written in one place."""

from __future__ import annotations

import pytest
from django.core.cache import cache as django_cache
from django.db import transaction

from devtools import demo
from notify import cache, store
from notify.models import Delivery, DeliveryLog, Notification, Preference, Recipient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def delivery(api):
    """A queued SMS delivery of a fresh recipient (its id)."""
    api.put("/api/v1/recipients/store-user", {"phone": "+14155550100", "email": "s@example.com"}, format="json")
    r = api.post("/api/v1/notifications", {"recipient": "store-user", "channels": ["sms"],
                                           "content": {"sms": {"body": "hi"}}}, format="json")
    assert r.status_code == 202, r.content
    return r.json()["deliveries"][0]["id"]


def log_of(delivery_id):
    return list(DeliveryLog.objects.filter(delivery_id=delivery_id).order_by("id")
                .values_list("from_status", "to_status", "attempt", "reason"))


def test_claim_takes_a_delivery_once_and_logs_it(delivery):
    first = store.claim(delivery)
    assert first["channel"] == "sms" and first["attempts"] == 1 and first["content"]["sms"] == {"body": "hi"}
    assert store.claim(delivery) is None
    assert log_of(delivery) == [("queued", "sending", 1, "")]


def test_an_outcome_is_written_only_by_the_attempt_that_holds_the_delivery(delivery):
    store.claim(delivery)
    assert not store.record_outcome(delivery, 2, "sent", "")  # another attempt's (stale) answer
    assert store.record_outcome(delivery, 1, "sent", "", provider="twilio", provider_message_id="SM1",
                                provider_status=201, answer={"sid": "SM1"}, duration_ms=12.5)
    row = Delivery.objects.get(id=delivery)
    assert (row.status, row.provider, row.provider_message_id) == ("sent", "twilio", "SM1")
    last = DeliveryLog.objects.filter(delivery_id=delivery).latest("id")
    assert (last.to_status, last.provider_status, last.provider_answer, last.duration_ms) == ("sent", 201, {"sid": "SM1"}, 12.5)


def test_replay_and_the_dispatcher_write_their_log_rows_too(delivery):
    store.claim(delivery)
    store.record_outcome(delivery, 1, "dead_lettered", "max_attempts")
    assert store.replay_dead_letters([delivery], None) == 1
    assert store.replay_dead_letters([delivery], None) == 0  # no longer dead-lettered
    store.claim(delivery)
    store.record_outcome(delivery, 1, "retrying", "503", delay=0)
    assert store.move_due([], 100) >= 1
    assert [row[:2] for row in log_of(delivery)] == [
        ("queued", "sending"), ("sending", "dead_lettered"), ("dead_lettered", "queued"),
        ("queued", "sending"), ("sending", "retrying"), ("retrying", "queued")]


def test_set_preferences_upserts_and_clears_the_cached_profile(api, delivery, app_key):
    app = app_key[0]
    recipient = Recipient.objects.get(app=app, external_id="store-user")
    assert cache.load_profile(app.id, "store-user")["preferences"] == {}
    assert django_cache.get(cache.profile_key(app.id, "store-user")) is not None
    store.set_preferences([recipient.id], ["sms", "email"], "", False, "provider")
    assert django_cache.get(cache.profile_key(app.id, "store-user")) is None
    store.set_preferences([recipient.id], ["sms"], "", True, "api")
    assert {(p.channel, p.enabled, p.source) for p in Preference.objects.filter(recipient=recipient)} == {
        ("sms", True, "api"), ("email", False, "provider")}
    assert cache.load_profile(app.id, "store-user")["preferences"] == {"sms|": True, "email|": False}


def test_recipients_at_finds_a_phone_or_an_email_in_every_app(api, delivery):
    other_app, other_key = demo.create_app("store-other")
    other = Recipient.objects.create(app=other_app, external_id="x", phone="+14155550100")
    found = store.recipients_at("+14155550100")
    assert other.id in found and len(found) == 2
    assert len(store.recipients_at("s@example.com")) == 1


def test_idempotent_responses_answer_what_was_answered_then(api, app_key):
    api.put("/api/v1/recipients/idem", {"phone": "+14155550101"}, format="json")
    r = api.post("/api/v1/notifications", {"recipient": "idem", "content": {"sms": {"body": "x"}}},
                 format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    found = store.idempotent_responses(app_key[0].id, ["k-1", "k-2"])
    assert list(found) == ["k-1"] and found["k-1"][1] == r.json()


def test_a_replay_in_a_callers_transaction_is_answered_and_leaves_the_transaction_usable(api, app_key):
    """A replayed key is found by the insert's refusal, then looked up: inside a transaction the
    refused insert sits under a savepoint, so the look-up and what follows still run."""
    api.put("/api/v1/recipients/idem", {"phone": "+14155550101"}, format="json")
    body = {"recipient": "idem", "content": {"sms": {"body": "x"}}, "event_id": "order-1"}
    with transaction.atomic():
        first = api.post("/api/v1/notifications", body, format="json")
        again = api.post("/api/v1/notifications", body, format="json")
        other = api.post("/api/v1/notifications", {**body, "content": {"sms": {"body": "y"}}}, format="json")
        assert Notification.objects.count() == 1
    assert first.status_code == again.status_code == 202 and again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"

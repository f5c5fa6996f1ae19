"""Rate limits in the send stage (notify.send → notify.policy → notify.ratelimit), called in this
process: a notification counts once per channel, whatever happens to its claim after the count.
The limits themselves, the stack and several processes: tests/test_rate_limits.py."""

from __future__ import annotations

import secrets

import pytest
from django.utils import timezone

from channels import registry
from notify import breaker, send, store
from notify.models import Category, Delivery

pytestmark = pytest.mark.django_db(transaction=True)

EMAIL = registry.channels_in_group("email")[0]
EMAIL_PROVIDER = registry.providers_of(EMAIL)[0]
IOS = registry.device_platforms()["ios"]
IOS_PROVIDER = registry.providers_of(IOS)[0]


def accept(api, user, body, **profile):
    api.put(f"/api/v1/recipients/{user}", profile, format="json")
    r = api.post("/api/v1/notifications", {"recipient": user, **body}, format="json")
    assert r.status_code == 202, r.content
    return r.json()["deliveries"]


def due_again(delivery_id: str) -> None:
    """What the dispatcher does once a waiting delivery is due: back to ``queued``."""
    Delivery.objects.filter(id=delivery_id).update(next_attempt_at=timezone.now())
    assert store.move_due([], 10) >= 1


EMAIL_BODY = {"content": {"email": {"subject": "s", "text": "t"}}, "category": "news"}


def test_a_delivery_handed_back_by_an_open_circuit_counts_once(api, app_key, ctl, tripped):
    Category.objects.create(app=app_key[0], name="news", rate_limits={EMAIL: "1/hour"})
    (d,) = accept(api, "rl1", EMAIL_BODY, email="rl1@example.com")
    tripped(EMAIL_PROVIDER)
    assert send.send(d["id"]) == "retrying"  # counted, then no provider: its attempt is refunded
    assert Delivery.objects.get(id=d["id"]).attempts == 0
    breaker.record_success(EMAIL_PROVIDER)
    breaker._local.pop(EMAIL_PROVIDER, None)
    due_again(d["id"])
    assert send.send(d["id"]) == "sent"  # attempt 1 again, but already counted
    (e,) = accept(api, "rl1", EMAIL_BODY)
    assert send.send(e["id"]) == "suppressed"
    assert Delivery.objects.get(id=e["id"]).reason == "rate_limited"


def test_a_provider_retry_is_not_counted_again(api, app_key, ctl):
    Category.objects.create(app=app_key[0], name="news", rate_limits={EMAIL: "1/hour"})
    ctl.add_fault(provider=EMAIL_PROVIDER, status=503, reason="ServiceUnavailable", count=1)
    (d,) = accept(api, "rl2", EMAIL_BODY, email="rl2@example.com")
    assert send.send(d["id"]) == "retrying"
    due_again(d["id"])
    assert send.send(d["id"]) == "sent"
    assert Delivery.objects.get(id=d["id"]).attempts == 2


def test_two_devices_of_one_notification_count_once_on_their_channel(api, app_key, ctl):
    Category.objects.create(app=app_key[0], name="news", rate_limits={"push": "1/hour"})
    api.put("/api/v1/recipients/rl3", {}, format="json")
    for _ in range(2):
        api.post("/api/v1/recipients/rl3/devices", {"platform": "ios", "token": secrets.token_hex(32)}, format="json")
    body = {"content": {"push": {"title": "t"}}, "category": "news"}
    both = accept(api, "rl3", body)
    assert [send.send(d["id"]) for d in both] == ["sent", "sent"]
    again = accept(api, "rl3", body)
    assert [send.send(d["id"]) for d in again] == ["suppressed", "suppressed"]
    assert len(ctl.records(IOS_PROVIDER)) == 2


def test_a_delivery_deferred_by_the_limit_is_counted_when_it_goes(api, app_key, ctl, settings):
    Category.objects.create(app=app_key[0], name="news", rate_limits={EMAIL: "1/hour"}, over_limit="defer")
    (d,) = accept(api, "rl4", EMAIL_BODY, email="rl4@example.com")
    (e,) = accept(api, "rl4", EMAIL_BODY)
    assert send.send(d["id"]) == "sent"
    assert send.send(e["id"]) == "scheduled"
    later = Delivery.objects.get(id=e["id"])
    assert (later.reason, later.attempts) == ("rate_limited", 0)
    # Once due it asks again, and the window is still full: deferred again, never sent.
    due_again(e["id"])
    assert send.send(e["id"]) == "scheduled"
    assert not ctl.records(EMAIL_PROVIDER, delivery_id=e["id"])


def test_only_deliveries_that_share_a_count_leave_a_marker(api, app_key, ctl):
    """The common case, one delivery of a notification on its channel, costs the limiter's one
    hit: no marker is read or written for it (notify.ratelimit.at_send)."""
    from django_redis import get_redis_connection

    def markers():
        return get_redis_connection("default").keys("*rl:counted:*")

    Category.objects.create(app=app_key[0], name="news", rate_limits={"*": "10/hour"})
    get_redis_connection("default").delete(*markers() or ["none"])
    (lone,) = accept(api, "rl6", EMAIL_BODY, email="rl6@example.com")
    assert send.send(lone["id"]) == "sent" and markers() == []
    api.put("/api/v1/recipients/rl7", {}, format="json")
    for _ in range(2):
        api.post("/api/v1/recipients/rl7/devices", {"platform": "ios", "token": secrets.token_hex(32)}, format="json")
    both = accept(api, "rl7", {"content": {"push": {"title": "t"}}, "category": "news"})
    assert [send.send(d["id"]) for d in both] == ["sent", "sent"]
    assert len(markers()) == 1

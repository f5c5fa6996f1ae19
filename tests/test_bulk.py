"""The bulk endpoint (POST /api/v1/notifications/bulk, notify.bulk): one template to up to
NOTIFY_BULK_MAX_RECIPIENTS recipients, each with its own data, validated as a whole, written in
one statement, with a fixed number of queries whatever the count."""

from __future__ import annotations

import json
import secrets

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devtools import demo
from notify.models import AddressSuppression, AppAPIKey, Delivery, Device, Notification, Preference, Recipient
from notify.models.suppressions import SuppressionReason
from notify.outbox import relay_once
from tests.conftest import wait_until
from tests.helpers import db_counts, queue_depths

URL = "/api/v1/notifications/bulk"


def make_recipients(app, count: int, prefix: str = "bulk") -> list[str]:
    """``count`` recipients with a phone only (one SMS delivery each); their external ids."""
    Recipient.objects.bulk_create([Recipient(app=app, external_id=f"{prefix}-{i}", name=f"Name{i}",
                                             phone=f"+8210{10000000 + i}") for i in range(count)])
    return [f"{prefix}-{i}" for i in range(count)]


def items(ids: list[str], **extra) -> list[dict]:
    return [{"recipient": eid, "data": {"name": f"N{i}", "order": f"A-{i}"}, **extra} for i, eid in enumerate(ids)]


def post(api, body: dict):
    return api.post(URL, body, format="json")


def test_ten_thousand_recipients_in_one_call_are_written_and_published(api, app_key, empty_queues,
                                                                       outbox_listener):
    ids = make_recipients(app_key[0], settings.NOTIFY_BULK_MAX_RECIPIENTS)
    body = {"template": "order-shipped", "recipients": [
        {**item, "event_id": f"e-{i}"} for i, item in enumerate(items(ids))]}
    assert len(json.dumps(body)) > settings.NOTIFY_MAX_BODY_BYTES  # the bulk endpoint's own limit applies
    r = post(api, body)
    assert r.status_code == 202, r.content[:2000]
    accepted = r.json()["accepted"]
    assert [a["index"] for a in accepted] == list(range(len(ids))) and r.json()["refused"] == {}
    assert Notification.objects.count() == len(ids)
    assert Delivery.objects.filter(status="queued", channel="sms").count() == len(ids)
    # Each item's own data rendered.
    for index in (0, 4321, len(ids) - 1):
        sms = Notification.objects.get(id=accepted[index]["id"]).content["sms"]["body"]
        assert f"N{index}님" in sms and f"A-{index} " in sms
    # One statement, one wake-up of the relay for the whole call.
    assert outbox_listener.received() == [""]
    published = 0
    while (n := relay_once()) > 0:
        published += n
    assert published == len(ids)
    assert Delivery.objects.filter(published_at__isnull=True).count() == 0


def test_bad_items_refuse_the_whole_call_by_default(api, app_key, outbox_listener):
    ids = make_recipients(app_key[0], 3)
    recipients = items(ids) + [{"recipient": "nobody"}, {"recipient": ids[0], "data": "x"}, "not an object",
                               {"recipient": ids[1], "colour": "red"}, {"recipient": ids[2], "data": {"name": "x"}}]
    before_db, before_q = db_counts(), queue_depths()
    r = post(api, {"template": "order-shipped", "recipients": recipients})
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "bulk_rejected"
    assert sorted(error["items"], key=int) == ["3", "4", "5", "6", "7"]
    assert error["items"]["3"]["code"] == "recipient_not_found"
    assert error["items"]["4"]["code"] == "invalid_request" and "data" in error["items"]["4"]["fields"]
    assert error["items"]["6"]["fields"] == {"colour": ["unknown field"]}
    assert error["items"]["7"]["code"] == "missing_variables"
    assert db_counts() == before_db and queue_depths() == before_q
    assert outbox_listener.received() == []


def test_skip_accepts_exactly_the_valid_items(api, app_key, outbox_listener):
    ids = make_recipients(app_key[0], 4)
    recipients = items(ids)
    recipients[1] = {"recipient": "nobody", "data": {"name": "a", "order": "b"}}
    recipients[3] = {"recipient": ids[3], "data": {"name": "only"}}
    r = post(api, {"template": "order-shipped", "on_invalid": "skip", "recipients": recipients})
    assert r.status_code == 202, r.content
    assert [a["index"] for a in r.json()["accepted"]] == [0, 2]
    assert {k: v["code"] for k, v in r.json()["refused"].items()} == {"1": "recipient_not_found",
                                                                     "3": "missing_variables"}
    written = Notification.objects.values_list("recipient__external_id", flat=True)
    assert sorted(written) == [ids[0], ids[2]]
    assert outbox_listener.received() == [""]


def test_skip_with_no_valid_item_is_refused(api, app_key):
    r = post(api, {"template": "order-shipped", "on_invalid": "skip", "recipients": [{"recipient": "nobody"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bulk_rejected"
    assert Notification.objects.count() == 0


def test_replays_by_event_id_answer_the_earlier_notifications(api, app_key, outbox_listener):
    ids = make_recipients(app_key[0], 3)
    body = {"template": "order-shipped", "recipients": [{**item, "event_id": f"k-{i}"}
                                                        for i, item in enumerate(items(ids))]}
    first = post(api, body)
    assert first.status_code == 202
    assert outbox_listener.received() == [""]
    again = post(api, body)
    assert again.status_code == 202
    assert [a["id"] for a in again.json()["accepted"]] == [a["id"] for a in first.json()["accepted"]]
    assert all(a["replayed"] for a in again.json()["accepted"])
    assert Notification.objects.count() == 3 and outbox_listener.received() == []
    # The same key with other data is refused, by index; a duplicate key within the call too.
    body["recipients"][1]["data"] = {"name": "other", "order": "x"}
    body["recipients"].append({**body["recipients"][0]})
    r = post(api, body)
    assert r.status_code == 400
    codes = {k: v["code"] for k, v in r.json()["error"]["items"].items()}
    assert codes == {"1": "idempotency_key_reused", "3": "duplicate_idempotency_key"}


def test_each_recipients_devices_preferences_and_suppressions_apply(api, app_key):
    """The profiles loaded for the whole call carry what a single send reads: an opted-out
    channel, a suppressed address and a device are each honoured per recipient."""
    app = app_key[0]
    ids = make_recipients(app, 3, "p")
    Preference.objects.create(recipient=Recipient.objects.get(app=app, external_id=ids[0]), channel="sms",
                              enabled=False)
    AddressSuppression.objects.create(app=app, channel="sms", address=f"+8210{10000000 + 1}",
                                      reason=SuppressionReason.values[0])
    Device.objects.create(app=app, recipient=Recipient.objects.get(app=app, external_id=ids[2]), platform="ios",
                          token=secrets.token_hex(32))
    r = post(api, {"template": "order-shipped", "recipients": items(ids)})
    assert r.status_code == 202, r.content
    rows = {(d.notification.recipient.external_id, d.channel): (d.status, d.reason)
            for d in Delivery.objects.select_related("notification__recipient")}
    assert rows == {(ids[0], "sms"): ("suppressed", "opted_out"),
                    (ids[1], "sms"): ("suppressed", SuppressionReason.values[0]),
                    (ids[2], "sms"): ("queued", ""), (ids[2], "apns"): ("queued", "")}


def _queries_for(api, app, count: int, prefix: str) -> int:
    ids = make_recipients(app, count, prefix)
    cache.clear()  # every profile a miss: the worst case
    with CaptureQueriesContext(connection) as queries:
        r = post(api, {"template": "order-shipped",
                       "recipients": [{**item, "event_id": f"{prefix}-{i}"} for i, item in enumerate(items(ids))]})
    assert r.status_code == 202, r.content[:500]
    return len(queries)


def test_query_count_does_not_grow_with_the_recipients(api, app_key):
    small = _queries_for(api, app_key[0], 10, "q10")
    large = _queries_for(api, app_key[0], 1000, "q1000")
    assert small == large
    assert Notification.objects.count() == 1010


def test_more_than_the_maximum_is_refused_with_its_own_code(api, app_key):
    r = post(api, {"template": "order-shipped",
                   "recipients": [{"recipient": f"u{i}"} for i in range(settings.NOTIFY_BULK_MAX_RECIPIENTS + 1)]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "too_many_recipients"
    assert Notification.objects.count() == 0


def test_body_over_the_bulk_limit_is_413(api, app_key):
    padding = "x" * settings.NOTIFY_BULK_MAX_BODY_BYTES
    r = api.generic("POST", URL, json.dumps({"template": "order-shipped", "recipients": [{"recipient": padding}]}),
                    content_type="application/json")
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert str(settings.NOTIFY_BULK_MAX_BODY_BYTES) in r.json()["error"]["message"]


def test_an_idempotency_key_header_is_refused_in_favour_of_each_event_id(api, app_key):
    ids = make_recipients(app_key[0], 2)
    before_db, before_q = db_counts(), queue_depths()
    r = api.post(URL, {"template": "order-shipped", "recipients": items(ids)}, format="json",
                 HTTP_IDEMPOTENCY_KEY="abc")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "idempotency_key_not_supported"
    assert "each recipient its own event_id" in error["message"] and "Idempotency-Key" in error["fields"]
    assert (db_counts(), queue_depths()) == (before_db, before_q)


def test_unknown_template_refuses_the_call_once(api, app_key):
    ids = make_recipients(app_key[0], 2)
    r = post(api, {"template": "no-such", "recipients": items(ids)})
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found"


def test_shared_fields_follow_the_single_send_rules(api, app_key):
    ids = make_recipients(app_key[0], 1)
    r = post(api, {"template": "order-shipped", "ttl": 0, "send_at": "2020-01-01T00:00:00Z", "recipients": items(ids)})
    assert r.status_code == 400 and {"ttl", "send_at"} <= set(r.json()["error"]["fields"])
    r = post(api, {"template": "order-shipped", "content": {}, "recipients": items(ids)})
    assert r.status_code == 400 and r.json()["error"]["fields"] == {"content": ["unknown field"]}
    r = post(api, {"template": "order-shipped", "channels": ["sms"], "priority": "high", "recipients": items(ids)})
    assert r.status_code == 202, r.content
    assert Notification.objects.get().priority == "high"


def test_the_send_scope_permits_bulk(api, app_key):
    from rest_framework.test import APIClient

    ids = make_recipients(app_key[0], 1)
    for scopes, expected in ((["send"], 202), (["recipients"], 403)):
        _, key = AppAPIKey.objects.create_key(name=f"k {scopes}", app=app_key[0], scopes=scopes)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        r = post(client, {"template": "order-shipped", "recipients": items(ids, event_id=f"s-{scopes[0]}")})
        assert r.status_code == expected, r.content


@pytest.mark.stack
@pytest.mark.django_db(transaction=True)
def test_a_bulk_call_is_delivered_end_to_end(stack, control):
    """Through gunicorn, the relay, the workers and the SMS provider's sandbox: each recipient
    gets its own text."""
    _, key = demo.create_app("bulk-e2e")
    users = [f"bulk-e2e-{secrets.token_hex(3)}-{i}" for i in range(5)]
    for i, user in enumerate(users):
        status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}",
                                 {"name": f"R{i}", "phone": f"+8210{20000000 + i}"})
        assert status == 201, body
    status, body = demo.call(stack.api_url, key, "POST", URL, {
        "template": "order-shipped", "channels": ["sms"],
        "recipients": [{"recipient": u, "data": {"name": f"Bulk{i}", "order": f"B-{i}"}} for i, u in enumerate(users)]})
    assert status == 202, body

    def sent():
        texts = {r["body"]["To"]: r["body"]["Body"] for r in control.records("twilio") if r.get("accepted")}
        wanted = {f"+8210{20000000 + i}" for i in range(len(users))}
        return texts if wanted <= set(texts) else None

    texts = wait_until(sent, timeout=60, message="the bulk call's SMS to reach the sandbox")
    for i in range(len(users)):
        assert f"Bulk{i}님" in texts[f"+8210{20000000 + i}"] and f"B-{i}" in texts[f"+8210{20000000 + i}"]

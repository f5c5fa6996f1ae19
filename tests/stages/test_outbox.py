"""The transactional outbox (notify.outbox): the API only commits deliveries and wakes the
relay with ``NOTIFY notify_outbox``; the relay publishes them as batch tasks per channel and
marks them published in the same transaction; workers hand unfinished batches back; the
dispatcher publishes what no relay took. Against the real PostgreSQL and RabbitMQ (test vhost).

The first tests run without the stack and call ``relay_once`` / ``hand_back`` / ``dispatch_due``
themselves, so nothing else takes the rows. The stack tests come last in this file on purpose:
the module's stack (relay, workers, dispatcher) starts with the first of them and runs until the
module ends, and would race the tests above for the outbox's rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import urllib.parse

import pytest
import requests
from django.db import connection, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from devtools import demo
from notify import accept
from notify.models import REACHED_PROVIDER, Delivery, DeliveryLog
from notify.maintenance import dispatch_due
from notify.outbox import PublishRefused, relay_once
from notify.queues import task_name
from notify.store import hand_back
from tests.conftest import wait_until
from tests.helpers import broker_unreachable, queue_depths, queued_tasks
from tests.test_e2e import FINAL, register, wait_final

pytestmark = pytest.mark.django_db(transaction=True)

# The stack tests' workers get one delivery per task, so that the connection test below runs
# one task per notification (it counts database sessions per task). Batching itself is covered
# by test_relay_groups_by_channel_and_splits_at_the_task_batch_size; the other stack tests here
# send a single delivery, for which the batch size makes no difference.
STACK_ENV = {"NOTIFY_TASK_BATCH": "1"}

SMS = {"sms": {"body": "Your code is 0000"}}
EMAIL = {"email": {"subject": "Hello", "text": "Hello there"}}


def _recipient(api, user: str = "outbox-user") -> str:
    r = api.put(f"/api/v1/recipients/{user}", {"email": "ana@example.com", "phone": "+4915123456789"}, format="json")
    assert r.status_code == 201, r.content
    return user


def _batch(api, items: list[dict]) -> list[dict]:
    r = api.post("/api/v1/notifications/batch", {"notifications": items}, format="json")
    assert r.status_code == 202, r.content
    return r.json()["notifications"]


def _delivery_ids(bodies: list[dict], channel: str) -> list[str]:
    return [d["id"] for b in bodies for d in b["deliveries"] if d["channel"] == channel]


# --- the wake-up ------------------------------------------------------------------------------

def test_a_committed_send_wakes_the_relay_and_a_rejected_one_does_not(api, outbox_listener):
    """The relay sleeps on LISTEN notify_outbox: a send must notify it, once it has committed
    (woken earlier it would look before the rows are visible and miss them until its idle
    check), and a refused request must not wake it for nothing."""
    user = _recipient(api)
    with transaction.atomic():
        r = api.post("/api/v1/notifications", {"recipient": user, "content": SMS}, format="json")
        assert r.status_code == 202, r.content
        assert outbox_listener.received() == []  # not before the commit
    assert outbox_listener.wait(timeout=5) == [""]
    assert outbox_listener.received() == []  # exactly one wake-up

    r = api.post("/api/v1/notifications", {"recipient": "nobody", "content": SMS}, format="json")
    assert r.status_code == 404 and r.json()["error"]["code"] == "recipient_not_found"
    assert outbox_listener.received() == []


def test_a_rolled_back_send_wakes_nobody_and_leaves_nothing_in_the_outbox(api, outbox_listener):
    """The NOTIFY is part of the send's transaction, not a side call on another connection."""
    user = _recipient(api)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        assert api.post("/api/v1/notifications", {"recipient": user, "content": SMS}, format="json").status_code == 202
        raise Rollback
    assert outbox_listener.received() == []
    assert not Delivery.objects.exists()


# --- relay_once -------------------------------------------------------------------------------

def test_relay_groups_by_channel_and_splits_at_the_task_batch_size(api, empty_queues, settings):
    """Five SMS and one email with NOTIFY_TASK_BATCH=2: three sms tasks of 2+2+1 ids and one
    email task, every delivery in exactly one task, never two channels in one task."""
    settings.NOTIFY_TASK_BATCH = 2
    user = _recipient(api)
    bodies = _batch(api, [{"recipient": user, "content": SMS, "event_id": f"g-{i}"} for i in range(5)]
                    + [{"recipient": user, "content": EMAIL, "event_id": "g-mail"}])
    sms_ids, email_ids = _delivery_ids(bodies, "sms"), _delivery_ids(bodies, "email")
    assert (len(sms_ids), len(email_ids)) == (5, 1)

    assert relay_once() == 6
    sms_tasks = queued_tasks("sms")
    assert {t["task"] for t in sms_tasks} == {"notify.deliver.sms"}
    assert sorted(len(t["args"][0]) for t in sms_tasks) == [1, 2, 2]
    assert all(len(t["args"]) == 1 for t in sms_tasks)  # a single argument: the list of ids
    assert sorted(i for t in sms_tasks for i in t["args"][0]) == sorted(sms_ids)
    assert queued_tasks("email") == [{"task": "notify.deliver.email", "args": [email_ids], "argsrepr": "[1 deliveries]"}]
    assert not Delivery.objects.filter(published_at__isnull=True).exists()
    assert relay_once() == 0
    assert queue_depths()["sms"] == 3


def test_relay_with_the_broker_unreachable_raises_and_leaves_the_rows_in_the_outbox(api, empty_queues, monkeypatch):
    """A publish that fails must roll back the claim: rows marked published without a message
    on the queue would never be sent (until the stale sweep, 15 minutes later)."""
    user = _recipient(api)
    bodies = _batch(api, [{"recipient": user, "content": SMS, "event_id": f"down-{i}"} for i in range(2)])
    ids = sorted(_delivery_ids(bodies, "sms"))

    with broker_unreachable(monkeypatch), pytest.raises(BrokerError):
        relay_once()
    assert sorted(str(i) for i in Delivery.objects.filter(status="queued", published_at__isnull=True)
                  .values_list("id", flat=True)) == ids
    assert queue_depths()["sms"] == 0

    # The broker back: the next round publishes them.
    assert relay_once() == 2
    [task] = queued_tasks("sms")
    assert sorted(task["args"][0]) == ids
    assert not Delivery.objects.filter(published_at__isnull=True).exists()


@contextlib.contextmanager
def _queue_policy(queue: str, definition: dict):
    """A RabbitMQ policy on one queue of the test vhost (management API), applied before the
    block and removed after it."""
    from django.conf import settings

    vhost = urllib.parse.unquote(urllib.parse.urlsplit(settings.NOTIFY_BROKER_URL).path[1:]) or "/"
    api = settings.NOTIFY_BROKER_API_URL.rstrip("/")
    policy = f"{api}/policies/{urllib.parse.quote(vhost, safe='')}/test-{queue}"
    applied = f"{api}/queues/{urllib.parse.quote(vhost, safe='')}/{queue}"
    requests.put(policy, json={"pattern": f"^{queue}$", "definition": definition, "apply-to": "queues",
                               "priority": 100}, timeout=5).raise_for_status()
    try:
        wait_until(lambda: requests.get(applied, timeout=5).json().get("policy") == f"test-{queue}", timeout=10)
        yield
    finally:
        requests.delete(policy, timeout=5).raise_for_status()
        wait_until(lambda: not requests.get(applied, timeout=5).json().get("policy"), timeout=10)


def test_a_message_the_broker_refuses_fails_the_whole_round_and_leaves_its_rows_in_the_outbox(
        api, empty_queues, settings):
    """The relay awaits a round's confirms together, after its last publish: one basic.nack
    among them (a queue that refuses publishes beyond one message) must still fail the round,
    so that no row is marked published without its message on the queue."""
    settings.NOTIFY_TASK_BATCH = 1
    user = _recipient(api)
    bodies = _batch(api, [{"recipient": user, "content": SMS, "event_id": f"nack-{i}"} for i in range(3)])
    ids = sorted(_delivery_ids(bodies, "sms"))

    with _queue_policy("sms", {"max-length": 1, "overflow": "reject-publish"}):
        with pytest.raises(PublishRefused):
            relay_once()
    assert sorted(str(i) for i in Delivery.objects.filter(status="queued", published_at__isnull=True)
                  .values_list("id", flat=True)) == ids
    assert queue_depths()["sms"] == 1  # the one the queue took: a duplicate its claim will skip

    assert relay_once() == 3
    assert not Delivery.objects.filter(published_at__isnull=True).exists()
    assert queue_depths()["sms"] == 4


def test_confirms_that_come_out_of_order_leave_the_round_waiting_for_the_earlier_ones():
    """RabbitMQ confirms a round's messages per queue: a single ack of a later tag can come
    before the earlier tags' (a ``multiple`` ack covers every tag up to its own). The round is
    confirmed only once every tag is, and a nack among them refuses it."""
    from notify.outbox import _Publisher

    publisher = _Publisher.__new__(_Publisher)  # its bookkeeping only: no connection
    publisher.unconfirmed, publisher.refused = {1, 2, 3, 4, 5}, False
    publisher._settle(4, False)
    publisher._settle(5, False)
    assert publisher.unconfirmed == {1, 2, 3}
    publisher._settle(2, True)
    assert publisher.unconfirmed == {3} and not publisher.refused
    publisher._nacked(3, False)
    assert publisher.unconfirmed == set() and publisher.refused


def test_a_broker_connection_that_died_between_rounds_is_replaced_within_the_round(api, empty_queues):
    """The relay keeps its broker connection from round to round. One that died meanwhile (a
    broker restart, a firewall dropping an idle connection) must not fail the next round: it is
    published again on a new connection."""
    from notify import outbox

    user = _recipient(api)
    _batch(api, [{"recipient": user, "content": SMS, "event_id": "cut-0"}])
    assert relay_once() == 1
    kept = outbox._publishers.current
    kept.connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)  # dead, as the broker or network left it

    _batch(api, [{"recipient": user, "content": SMS, "event_id": "cut-1"}])
    assert relay_once() == 1
    assert outbox._publishers.current is not kept
    assert not Delivery.objects.filter(published_at__isnull=True).exists()
    assert queue_depths()["sms"] == 2


# --- hand_back --------------------------------------------------------------------------------

def test_hand_back_reopens_only_rows_still_queued_and_wakes_the_relay(api, empty_queues, outbox_listener):
    """A worker out of time hands its batch's rest back; a row another worker has meanwhile
    claimed (sending) or finished (sent) must stay as it is, or it would be sent twice."""
    user = _recipient(api)
    bodies = _batch(api, [{"recipient": user, "content": SMS, "event_id": f"hb-{i}"} for i in range(3)])
    sent_id, sending_id, queued_id = _delivery_ids(bodies, "sms")
    assert relay_once() == 3
    assert outbox_listener.received() == [""]  # the send's own wake-up
    Delivery.objects.filter(id=sent_id).update(status="sent", sent_at=timezone.now())
    Delivery.objects.filter(id=sending_id).update(status="sending")
    untouched = {d.id: (d.status, d.published_at, d.updated_at)
                 for d in Delivery.objects.filter(id__in=[sent_id, sending_id])}

    assert hand_back([sent_id, sending_id, queued_id]) == 1
    assert outbox_listener.received() == [""]
    assert {d.id: (d.status, d.published_at, d.updated_at)
            for d in Delivery.objects.filter(id__in=[sent_id, sending_id])} == untouched
    reopened = Delivery.objects.get(id=queued_id)
    assert (reopened.status, reopened.published_at) == ("queued", None)

    # Nothing left to hand back: no row changes and no wake-up.
    assert hand_back([sent_id, sending_id]) == 0
    assert outbox_listener.received() == []

    # The relay publishes the handed-back row again, and only it.
    before = len(queued_tasks("sms"))
    assert relay_once() == 1
    assert queued_tasks("sms")[before:] == [{"task": "notify.deliver.sms", "args": [[queued_id]],
                                             "argsrepr": "[1 deliveries]"}]


def test_a_task_that_fails_unexpectedly_hands_the_rest_of_its_batch_back(api, empty_queues):
    """An error that is not a database outage ends the task and acknowledges its message; the
    deliveries after the failing one must go back to the outbox at once, not wait 15 minutes for
    the stale-publish sweep."""
    from notify.tasks import deliver_tasks

    user = _recipient(api)
    bodies = _batch(api, [{"recipient": user, "content": SMS, "event_id": f"boom-{i}"} for i in range(2)])
    ids = _delivery_ids(bodies, "sms")
    assert relay_once() == 2
    assert not Delivery.objects.filter(id__in=ids, published_at__isnull=True).exists()

    # A malformed id makes the claim fail with a DataError (not an outage): the task raises.
    with pytest.raises(Exception) as raised:
        deliver_tasks["sms"].run(["not-a-delivery-id", *ids])
    assert "not-a-delivery-id" in str(raised.value) or "uuid" in str(raised.value).lower()
    rows = list(Delivery.objects.filter(id__in=ids).values_list("status", "published_at"))
    assert rows == [("queued", None), ("queued", None)]
    assert relay_once() == 2


# --- the dispatcher's backstop ----------------------------------------------------------------

def test_dispatch_due_publishes_rows_no_relay_took_and_leaves_fresh_ones_to_the_relay(api, empty_queues, settings):
    """With no relay running (or the broker down when it ran) rows would wait forever; the
    dispatcher publishes those older than NOTIFY_REPUBLISH_AFTER, and not younger ones, which
    the relay is about to take (publishing them too would double the messages)."""
    settings.NOTIFY_REPUBLISH_AFTER = 60
    user = _recipient(api)
    bodies = _batch(api, [{"recipient": user, "content": SMS, "event_id": f"bs-{i}"} for i in range(2)])
    old_id, fresh_id = _delivery_ids(bodies, "sms")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE notify_delivery SET updated_at = now() - interval '120 seconds' WHERE id = %s", [old_id])

    assert dispatch_due() == 1
    assert queued_tasks("sms") == [{"task": "notify.deliver.sms", "args": [[old_id]], "argsrepr": "[1 deliveries]"}]
    assert Delivery.objects.get(id=old_id).published_at is not None
    assert Delivery.objects.get(id=fresh_id).published_at is None
    assert dispatch_due() == 0
    assert relay_once() == 1  # the relay's share
    assert queue_depths()["sms"] == 2


# --- with the stack (keep these last: see the module docstring) --------------------------------

@pytest.fixture
def app_and_key(stack, transactional_db):
    return demo.create_app("outbox")


@pytest.fixture
def key(app_and_key):
    return app_and_key[1]


def _sent_once(control, provider: str, delivery_id: str) -> bool:
    """The provider accepted this delivery exactly once (the sandbox's record of its wire)."""
    return len(control.records(provider, accepted=True, delivery_id=delivery_id)) == 1


@pytest.mark.stack
def test_without_the_relay_the_dispatcher_still_sends_once(stack, key, control, settings):
    """The relay is an optimisation of latency, not a single point of failure: with it stopped
    the dispatcher's backstop publishes the row after NOTIFY_REPUBLISH_AFTER, and it is sent
    exactly once."""
    register(stack, key, control, "no-relay", platforms=())
    maintenance_log = stack.config.log_dir / "maintenance.log"
    logged_before = len(maintenance_log.read_text(errors="replace"))
    stack.stop_relay()
    try:
        status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                     {"recipient": "no-relay", "content": SMS})
        assert status == 202, accepted
        final = wait_final(stack, key, accepted["id"], timeout=settings.NOTIFY_REPUBLISH_AFTER + 15)
    finally:
        stack.start_relay()
    [d] = final["deliveries"]
    assert d["status"] in REACHED_PROVIDER, final
    row = Delivery.objects.get(id=d["id"])
    # Published by the backstop, not at once: only rows untouched that long are its share.
    assert row.published_at - row.created_at >= dt.timedelta(seconds=settings.NOTIFY_REPUBLISH_AFTER)
    assert _sent_once(control, "twilio", d["id"])
    assert DeliveryLog.objects.filter(delivery_id=d["id"], to_status="sending").count() == 1
    # The dispatcher says so, for the operator who forgot to run `manage.py relay`.
    assert "1 deliveries no relay had taken" in maintenance_log.read_text(errors="replace")[logged_before:]


@pytest.mark.stack
def test_a_message_of_the_one_id_per_task_format_is_still_sent(stack, app_and_key, control):
    """Messages published by the previous version (a bare delivery id, not a list) may still
    be on the queues when the new workers start; they must be sent, not read as a list of
    characters."""
    app, key = app_and_key
    register(stack, key, control, "old-format", platforms=())
    planned = accept.plan(app.id, None, {"recipient": "old-format", "content": SMS, "channels": ["sms"]}, None)
    [delivery] = planned.deliveries
    # Committed as the old version left it: queued and already published (in the same
    # transaction, so the relay never sees it unpublished). Neither the relay nor the
    # dispatcher (until the stale sweep, 15 min) publishes it then: only our message can send it.
    with transaction.atomic():
        accept.write([planned])
        assert Delivery.objects.filter(id=delivery.id).update(published_at=timezone.now()) == 1

    from notify.celery import app as celery_app

    celery_app.send_task(task_name("sms"), args=[str(delivery.id)])
    final = wait_final(stack, key, planned.body["id"])
    assert final["deliveries"][0]["status"] in REACHED_PROVIDER, final
    assert _sent_once(control, "twilio", str(delivery.id))


def _db_sessions() -> int:
    """Sessions ever opened on the test database (pg_stat_database.sessions, PostgreSQL 14+)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.stack
def test_workers_keep_their_database_connection_across_tasks(stack, key, control):
    """Celery's Django fix-up closes the database connection around every task unless
    CELERY_DB_REUSE_MAX is set: a PostgreSQL session (fork, authentication) per delivery. With
    it, 30 tasks (one delivery each, see STACK_ENV) open next to no new session: at most one
    per worker process still cold, and one for the API call.

    Email, not SMS: the sandbox's Twilio calls the API back twice per message, and each API
    thread opens its own (persistent) connection on first use, up to 16 of them, which would
    blur the count. The API takes the 30 in one call and the test polls the database on its
    own connection, so neither adds sessions per delivery."""
    register(stack, key, control, "conn", platforms=())
    items = [{"recipient": "conn", "content": {"email": {"subject": f"#{i}", "text": "Hello"}}, "event_id": f"conn-{i}"}
             for i in range(30)]
    before = _db_sessions()
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications/batch", {"notifications": items})
    assert status == 202, body
    ids = _delivery_ids(body["notifications"], "email")
    assert len(ids) == 30
    wait_until(lambda: not Delivery.objects.filter(id__in=ids).exclude(status__in=FINAL).exists(),
               timeout=60, message="the 30 emails to finish")
    assert set(Delivery.objects.filter(id__in=ids).values_list("status", flat=True)) == {"sent"}
    assert len(control.records("ses", accepted=True)) == 30
    opened = _db_sessions() - before
    assert opened < 15, f"{opened} new database sessions for 30 tasks"

"""Broadcasts (issue 14, notify.broadcast): a template sent to a segment of an app's recipients,
fanned out in batches that each write their rows and advance the cursor in one transaction, or
in lanes (id ranges written at once) whose cursor moves once every lane has committed.

The tests run the fan-out batches in the test process (notify.broadcast.fan_out, what the
maintenance worker's task runs) so each step can be observed; the last one runs the whole stack
(API, maintenance worker, relay, channel workers, provider sandbox)."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from devtools import demo
from notify import broadcast, metrics, store
from notify.models import (Broadcast, Delivery, Device, Notification, OutboxBatch, Preference, Recipient, Template,
                           TemplateVersion)
from notify.outbox import relay_once
from notify.rendering import assign_variant
from tests.conftest import wait_until
from tests.helpers import broker_unreachable, queue_depths, queued_tasks, separate_session

URL = "/api/v1/broadcasts"
DATA = {"name": "고객", "order": "B-1"}


def make(app, external_id: str, **fields) -> Recipient:
    fields.setdefault("email", f"{external_id}@example.com")
    return Recipient.objects.create(app=app, external_id=external_id, **fields)


def start(api, segment: dict, **extra):
    return api.post(URL, {"template": "order-shipped", "data": DATA, "segment": segment, **extra}, format="json")


def run_all(broadcast_id: int, limit: int = 1000) -> int:
    """Run fan-out batches until the broadcast is no longer running; returns how many ran."""
    batches = 0
    while True:
        _, status = broadcast.fan_out(broadcast_id, limit)
        batches += 1
        if status != "running":
            return batches


def recipients_of(broadcast_id: int) -> list[str]:
    return sorted(Notification.objects.filter(broadcast_id=broadcast_id).values_list("recipient__external_id", flat=True))


@pytest.fixture
def people(app_key):
    app = app_key[0]
    return {
        "ko": make(app, "ko", locale="ko-KR", tags=["vip", "beta"]),
        "ko2": make(app, "ko2", locale="ko", tags=["beta"]),
        "en": make(app, "en", locale="en-US", tags=["vip"]),
        "fr": make(app, "fr", locale="fr", tags=[]),
        "other": make(demo.create_app("other-app")[0], "ko-elsewhere", locale="ko", tags=["vip", "beta"]),
    }


@pytest.mark.parametrize("segment, expected", [
    ({"all": True}, ["en", "fr", "ko", "ko2"]),
    ({"locale": "ko"}, ["ko", "ko2"]),
    ({"locale": "KO-kr"}, ["ko"]),
    ({"tags": ["vip"]}, ["en", "ko"]),
    ({"tags": ["vip", "beta"]}, ["en", "ko", "ko2"]),
    ({"tags": ["vip", "beta"], "tags_match": "all"}, ["ko"]),
    ({"external_ids": ["fr", "en", "nobody"]}, ["en", "fr"]),
    ({"locale": "ko", "tags": ["vip"]}, ["ko"]),
])
def test_each_segment_filter_picks_exactly_its_recipients(api, people, segment, expected):
    response = start(api, segment)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["total"] == len(expected) and body["status"] == "running"
    run_all(body["id"])
    assert recipients_of(body["id"]) == expected
    progress = api.get(f"{URL}/{body['id']}").json()
    assert progress["status"] == "done"
    assert progress["written"] == progress["queued"] == len(expected)  # one email each


def test_recipient_tags_are_set_validated_and_read_through_the_api(api):
    response = api.put("/api/v1/recipients/t1", {"tags": ["vip", "beta-2", "vip"]}, format="json")
    assert response.status_code == 201 and response.json()["tags"] == ["vip", "beta-2"]
    response = api.put("/api/v1/recipients/t1", {"tags": ["Not A Slug"]}, format="json")
    assert response.status_code == 400 and response.json()["error"]["fields"]["tags"]
    response = api.put("/api/v1/recipients/t1", {"tags": [f"t{i}" for i in range(33)]}, format="json")
    assert response.status_code == 400
    assert Recipient.objects.get(external_id="t1").tags == ["vip", "beta-2"]


def test_two_thousand_recipients_in_several_batches_each_get_exactly_one_notification(api, app_key):
    app = app_key[0]
    Recipient.objects.bulk_create([Recipient(app=app, external_id=f"m{i}", email=f"m{i}@example.com",
                                             phone=f"+8210{20000000 + i}" if i % 2 else "")
                                   for i in range(2000)])
    body = start(api, {"all": True}).json()
    assert run_all(body["id"], limit=300) == 7
    notifications = Notification.objects.filter(broadcast_id=body["id"])
    assert notifications.count() == 2000
    assert notifications.values("recipient_id").distinct().count() == 2000
    deliveries = Delivery.objects.filter(notification__broadcast_id=body["id"])
    assert deliveries.filter(channel="email", status="queued").count() == 2000
    assert deliveries.filter(channel="sms", status="queued").count() == 1000
    row = Broadcast.objects.get(pk=body["id"])
    assert (row.total, row.written, row.queued, row.status) == (2000, 2000, 3000, "done")
    assert row.cursor == Recipient.objects.filter(app=app).order_by("-id").first().id
    # Rendered once, for the template's only locale, with the broadcast's data.
    note = notifications.first()
    assert note.locale == "ko" and "B-1" in note.content["email"]["subject"] and note.template_version == 1


def test_push_goes_to_every_active_device_of_its_platform(api, app_key):
    app = app_key[0]
    person = make(app, "dev", email="")
    Device.objects.create(app=app, recipient=person, platform="ios", token="a" * 64)
    Device.objects.create(app=app, recipient=person, platform="android", token=demo.fcm_token())
    Device.objects.create(app=app, recipient=person, platform="ios", token="b" * 64, active=False)
    body = start(api, {"external_ids": ["dev"]}).json()
    run_all(body["id"])
    rows = Delivery.objects.filter(notification__broadcast_id=body["id"])
    assert sorted((d.channel, d.address) for d in rows) == sorted([("apns", "a" * 64), ("fcm", rows.get(channel="fcm").address)])


def test_opted_out_and_muted_recipients_are_suppressed_and_counted(api, app_key):
    app = app_key[0]
    make(app, "fine")
    out = make(app, "out")
    Preference.objects.create(recipient=out, channel="email", category="", enabled=False)
    back_in = make(app, "back-in")
    Preference.objects.create(recipient=back_in, channel="email", category="", enabled=False)
    Preference.objects.create(recipient=back_in, channel="email", category="orders", enabled=True)
    make(app, "muted", muted=True)
    make(app, "was-muted", muted=True, muted_until=timezone.now() - dt.timedelta(minutes=1))
    body = start(api, {"all": True}).json()
    run_all(body["id"])
    rows = {d.notification.recipient.external_id: d for d in
            Delivery.objects.filter(notification__broadcast_id=body["id"]).select_related("notification__recipient")}
    assert {k: (d.status, d.reason) for k, d in rows.items()} == {
        "fine": ("queued", ""), "out": ("suppressed", "opted_out"), "back-in": ("queued", ""),
        "muted": ("suppressed", "muted"), "was-muted": ("queued", "")}
    progress = api.get(f"{URL}/{body['id']}").json()
    assert (progress["written"], progress["queued"], progress["suppressed"]) == (5, 3, 2)


def test_progress_counts_deliveries_by_outcome(api, app_key):
    app = app_key[0]
    for i in range(6):
        make(app, f"p{i}")
    body = start(api, {"all": True}).json()
    run_all(body["id"])
    rows = list(Delivery.objects.filter(notification__broadcast_id=body["id"]).order_by("id"))
    for delivery, status in zip(rows, ["sent", "delivered", "failed", "expired", "suppressed"]):
        Delivery.objects.filter(pk=delivery.pk).update(status=status)
    progress = api.get(f"{URL}/{body['id']}").json()
    assert {k: progress[k] for k in ("total", "written", "queued", "sent", "failed", "suppressed", "pending",
                                      "status")} == {"total": 6, "written": 6, "queued": 6, "sent": 2, "failed": 2,
                                                     "suppressed": 1, "pending": 1, "status": "done"}
    listed = api.get(URL).json()
    assert [b["id"] for b in listed] == [body["id"]] and listed[0]["sent"] == 2


def test_cancel_midway_stops_the_fan_out_and_cancels_unsent_deliveries(api, app_key):
    app = app_key[0]
    for i in range(50):
        make(app, f"c{i:02}")
    body = start(api, {"all": True}).json()
    assert broadcast.fan_out(body["id"], 20) == (20, "running")
    first = Delivery.objects.filter(notification__broadcast_id=body["id"]).order_by("id").first()
    Delivery.objects.filter(pk=first.pk).update(status="sent")
    response = api.post(f"{URL}/{body['id']}/cancel")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "cancelled" and response.json()["cancelled"] == 19
    assert response.json()["finished_at"] == response.json()["cancelled_at"]  # the fan-out ended there
    assert broadcast.fan_out(body["id"], 20) == (0, "cancelled")
    assert Notification.objects.filter(broadcast_id=body["id"]).count() == 20
    assert Delivery.objects.get(pk=first.pk).status == "sent"
    assert api.post(f"{URL}/{body['id']}/cancel").json()["error"]["code"] == "not_cancellable"


@pytest.mark.django_db(transaction=True)
def test_cancel_takes_the_broadcasts_batch_rows_out_of_the_outbox_but_waits_for_none_a_relay_holds(api, app_key):
    """Cancelling deletes the broadcast's batch rows the relay has not taken, so the relay never
    publishes their deliveries; a row a relay round holds is skipped, not waited for, and another
    broadcast's rows stay."""
    app = app_key[0]
    for i in range(10):
        make(app, f"r{i:02}")
    cancelled, other = (start(api, {"all": True}).json()["id"] for _ in range(2))
    assert [broadcast.fan_out(cancelled, 4) for _ in range(2)] == [(4, "running")] * 2
    run_all(other, 10)
    rows = list(OutboxBatch.objects.filter(broadcast_id=cancelled).order_by("id").values_list("id", flat=True))
    assert len(rows) == 2
    others = set(OutboxBatch.objects.exclude(broadcast_id=cancelled).values_list("id", flat=True))
    assert len(others) == 1 and OutboxBatch.objects.get(pk=min(others)).broadcast_id == other

    with separate_session() as relay:  # a relay round in the middle of publishing the first row
        with relay.transaction():
            relay.execute("SELECT 1 FROM notify_outboxbatch WHERE id = %s FOR UPDATE", (rows[0],))
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '3s'")  # a wait for the row would fail, not hang
            try:
                response = api.post(f"{URL}/{cancelled}/cancel")
            finally:
                with connection.cursor() as cursor:
                    cursor.execute("RESET lock_timeout")
    assert response.status_code == 200, response.json()
    assert response.json()["cancelled"] == 8
    assert list(OutboxBatch.objects.filter(broadcast_id=cancelled).values_list("id", flat=True)) == [rows[0]]
    assert set(OutboxBatch.objects.exclude(broadcast_id=cancelled).values_list("id", flat=True)) == others


def test_a_done_broadcast_still_cancels_what_it_has_not_sent(api, app_key):
    """The fan-out finishes (``done``) long before the last delivery of a large audience is
    sent: cancel then still takes back what has not started, and the broadcast ends
    ``cancelled`` with ``finished_at`` kept. Once nothing is left it is a 409 and nothing changes."""
    app = app_key[0]
    for i in range(6):
        make(app, f"d{i}")
    body = start(api, {"all": True}).json()
    run_all(body["id"])
    row = Broadcast.objects.get(pk=body["id"])
    assert row.status == "done" and row.finished_at is not None
    deliveries = Delivery.objects.filter(notification__broadcast_id=body["id"]).order_by("id")
    sent = deliveries.first()
    Delivery.objects.filter(pk=sent.pk).update(status="sent")

    response = api.post(f"{URL}/{body['id']}/cancel")
    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["cancelled"], response.json()["pending"]) == ("cancelled", 5, 0)
    assert response.json()["finished_at"] == api.get(f"{URL}/{body['id']}").json()["finished_at"]
    assert Broadcast.objects.get(pk=body["id"]).finished_at == row.finished_at
    assert not OutboxBatch.objects.filter(broadcast_id=body["id"]).exists()
    assert Delivery.objects.get(pk=sent.pk).status == "sent"

    # Done with every delivery final: nothing to cancel, and it stays done.
    finished = start(api, {"all": True}).json()
    run_all(finished["id"])
    Delivery.objects.filter(notification__broadcast_id=finished["id"]).update(status="sent")
    refused = api.post(f"{URL}/{finished['id']}/cancel")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_cancellable"
    assert "no delivery left to cancel" in refused.json()["error"]["message"]
    assert Broadcast.objects.get(pk=finished["id"]).status == "done"
    assert OutboxBatch.objects.filter(broadcast_id=finished["id"]).exists()  # the relay's, untouched


def test_a_batch_killed_before_commit_or_run_twice_neither_loses_nor_doubles(api, app_key):
    app = app_key[0]
    for i in range(30):
        make(app, f"k{i:02}")
    body = start(api, {"all": True}).json()
    row = Broadcast.objects.get(pk=body["id"])

    class Killed(Exception):
        pass

    # The worker dies after the batch's statement, before its commit: nothing of it stays.
    with pytest.raises(Killed), transaction.atomic():
        store.fan_out_batch(row, broadcast._channels(None), False, 10)
        raise Killed
    assert Notification.objects.filter(broadcast_id=body["id"]).count() == 0
    assert Broadcast.objects.get(pk=body["id"]).cursor == 0
    broadcast.fan_out(body["id"], 10)
    # A duplicate task running with a stale view (the cursor rewound) writes nothing twice.
    Broadcast.objects.filter(pk=body["id"]).update(cursor=0)
    broadcast.fan_out(body["id"], 10)
    run_all(body["id"], 10)
    assert recipients_of(body["id"]) == [f"k{i:02}" for i in range(30)]
    assert Delivery.objects.filter(notification__broadcast_id=body["id"]).count() == 30
    assert Broadcast.objects.get(pk=body["id"]).written == 30


@pytest.mark.django_db(transaction=True)
def test_writing_notifications_and_deliveries_locks_neither_app_template_nor_device(api, app_key):
    """Every notification of an app's sends points at the same app, key and template rows:
    their checks would lock those rows FOR KEY SHARE in every writing transaction (Django's
    on_delete guards them instead), and a delivery's checks would lock its notification and its
    device once per delivery. A recipient's row is still checked and locked."""
    app = app_key[0]
    for i in range(3):
        make(app, f"h{i}")
    phone = Device.objects.create(app=app, recipient=Recipient.objects.get(app=app, external_id="h1"),
                                  platform="ios", token="c" * 64)
    row = Broadcast.objects.get(pk=start(api, {"all": True}).json()["id"])
    with transaction.atomic():
        store.fan_out_batch(row, broadcast._channels(None), False, 10)
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the checks a commit runs, now
        with separate_session() as other:
            assert other.execute("SELECT id FROM notify_app WHERE id = %s FOR UPDATE NOWAIT", [app.id]).fetchone()
            assert other.execute("SELECT id FROM notify_template WHERE id = %s FOR UPDATE NOWAIT",
                                 [row.template_id]).fetchone()
            assert other.execute("SELECT id FROM notify_device WHERE id = %s FOR UPDATE NOWAIT",
                                 [phone.id]).fetchone()
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("SELECT id FROM notify_recipient WHERE app_id = %s AND external_id = 'h0' FOR UPDATE NOWAIT",
                              [app.id])
    assert Notification.objects.filter(broadcast_id=row.id, template_id=row.template_id).count() == 3
    pushed = Delivery.objects.get(device=phone)
    # The ORM's on_delete still holds without the database's constraint.
    with pytest.raises(ProtectedError, match="Notification.app"):
        app.delete()
    phone.delete()
    pushed.refresh_from_db()
    assert (pushed.device_id, pushed.channel, pushed.address) == (None, "apns", "c" * 64)
    Notification.objects.get(pk=pushed.notification_id).delete()
    assert not Delivery.objects.filter(pk=pushed.pk).exists()


@pytest.fixture
def lanes(monkeypatch):
    """Lanes from 5 recipients each; their threads' connections closed after the test."""
    monkeypatch.setattr(broadcast, "LANE_MIN", 5)
    yield
    broadcast.stop_lanes()


@pytest.mark.django_db(transaction=True)
def test_lanes_write_a_batch_at_once_and_a_lane_lost_before_the_cursor_moved_is_skipped_after(
        api, app_key, lanes, monkeypatch):
    # Lanes run on their own connections, so this test commits (transaction=True).
    app = app_key[0]
    Recipient.objects.bulk_create([Recipient(app=app, external_id=f"l{i:02}", email=f"l{i}@example.com",
                                             phone="+821055550000" if i % 3 == 0 else "") for i in range(53)])
    body = start(api, {"all": True}).json()
    assert broadcast.fan_out(body["id"], 20, lanes=2) == (20, "running")
    row = Broadcast.objects.get(pk=body["id"])
    ids = list(Recipient.objects.filter(app=app).order_by("id").values_list("id", flat=True))
    assert (row.cursor, row.written) == (ids[19], 20)

    # The first lane dies after the upper lane committed: the upper lane's rows stay, counted,
    # above the cursor; the next batch takes them again and their idempotency keys skip them.
    real = store.fan_out_lane

    def first_lane_dies(*args, first, **kwargs):
        if first:
            raise RuntimeError("worker killed")
        return real(*args, first=first, **kwargs)

    monkeypatch.setattr(store, "fan_out_lane", first_lane_dies)
    with pytest.raises(RuntimeError):
        broadcast.fan_out(body["id"], 20, lanes=2)
    monkeypatch.setattr(store, "fan_out_lane", real)
    row = Broadcast.objects.get(pk=body["id"])
    assert (row.cursor, row.written) == (ids[19], 30)  # ids[30:40] written by the upper lane
    assert Notification.objects.filter(broadcast_id=body["id"]).count() == 30
    while broadcast.fan_out(body["id"], 20, lanes=2)[1] == "running":
        pass
    assert recipients_of(body["id"]) == [f"l{i:02}" for i in range(53)]
    deliveries = Delivery.objects.filter(notification__broadcast_id=body["id"])
    assert deliveries.count() == 53 + 18
    row = Broadcast.objects.get(pk=body["id"])
    assert (row.status, row.cursor, row.written, row.queued) == ("done", ids[-1], 53, 71)
    # The lost lane's batch rows went with its rows: every queued delivery waits for the relay
    # exactly once.
    assert sorted(i for b in OutboxBatch.objects.all() for i in b.delivery_ids) == sorted(
        deliveries.filter(status="queued").values_list("id", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_broadcast_stops_its_lanes(api, app_key, lanes, monkeypatch):
    for i in range(30):
        make(app_key[0], f"x{i:02}")
    body = start(api, {"all": True}).json()
    assert broadcast.fan_out(body["id"], 10, lanes=2) == (10, "running")
    # Cancelled (on another connection) once the batch has read the status, before its lanes
    # write: every lane finds it cancelled and rolls back.
    real = store.fan_out_lanes
    cancelled = []

    def cancel():
        cancelled.append(store.cancel_broadcast(app_key[0].id, body["id"]))
        connection.close()

    def cancel_after_reading(*args, **kwargs):
        found = real(*args, **kwargs)
        thread = threading.Thread(target=cancel)
        thread.start()
        thread.join()
        return found

    monkeypatch.setattr(store, "fan_out_lanes", cancel_after_reading)
    assert broadcast.fan_out(body["id"], 10, lanes=2) == (0, "cancelled")
    assert cancelled == [10]
    monkeypatch.setattr(store, "fan_out_lanes", real)
    assert broadcast.fan_out(body["id"], 10, lanes=2) == (0, "cancelled")
    assert Notification.objects.filter(broadcast_id=body["id"]).count() == 10
    assert Broadcast.objects.get(pk=body["id"]).written == 10


@pytest.mark.django_db(transaction=True)
def test_a_cancel_waiting_for_a_batch_also_cancels_what_that_batch_wrote(api, app_key):
    """A cancel that waits for the broadcast's row while a batch holds it cancels the batch's
    deliveries once it commits: the deliveries are read after the wait, not before."""
    for i in range(10):
        make(app_key[0], f"w{i:02}")
    body = start(api, {"all": True}).json()
    wrote, cancelled = threading.Event(), []

    def batch_committing_late():
        with transaction.atomic():
            # The batch's lock on the broadcast row, then its rows, held until the cancel waits.
            Broadcast.objects.select_for_update().get(pk=body["id"])
            assert broadcast.fan_out(body["id"], 10) == (10, "running")
            wrote.set()
            wait_until(lambda: _waiting_for_a_lock(), timeout=10, message="the cancel to wait")
        connection.close()

    def cancel():
        wrote.wait(10)
        cancelled.append(store.cancel_broadcast(app_key[0].id, body["id"]))
        connection.close()

    threads = [threading.Thread(target=batch_committing_late), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cancelled == [10]
    assert set(Delivery.objects.filter(notification__broadcast_id=body["id"]).values_list("status", flat=True)) \
        == {"cancelled"}


def _waiting_for_a_lock() -> bool:
    """Whether a session of the test database waits for a row lock (the statistics snapshot of
    this transaction dropped first: it would otherwise show the sessions as they were)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def _row_versions(ids) -> dict[str, int]:
    """Each delivery's row version (xmin): an UPDATE of the row, whatever it sets, changes it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id::text, xmin::text::bigint FROM notify_delivery WHERE id = ANY(%s::uuid[])",
                       [[str(i) for i in ids]])
        return dict(cursor.fetchall())


def test_the_fan_out_hands_its_deliveries_to_the_relay_as_one_row_per_channel(api, app_key, settings,
                                                                               empty_queues):
    """A broadcast's deliveries wait in the outbox as batch rows (notify.models.OutboxBatch):
    the relay publishes every queued one exactly once, in tasks of NOTIFY_BROADCAST_TASK_BATCH, without
    writing a delivery row again, and a suppressed one not at all; the outbox's gauge counts
    them meanwhile."""
    settings.NOTIFY_TASK_BATCH = 1  # a single send's: not the broadcast's
    settings.NOTIFY_BROADCAST_TASK_BATCH = 4
    app = app_key[0]
    for i in range(9):
        make(app, f"o{i}", phone="+821055550000" if i % 3 == 0 else "")
    out = make(app, "out", phone="+821055550001")
    Preference.objects.create(recipient=out, channel="email", category="", enabled=False)
    body = start(api, {"all": True}).json()
    run_all(body["id"])
    deliveries = Delivery.objects.filter(notification__broadcast_id=body["id"])
    queued = {c: sorted(str(i) for i in deliveries.filter(channel=c, status="queued").values_list("id", flat=True))
              for c in ("email", "sms")}
    assert (len(queued["email"]), len(queued["sms"])) == (9, 4)
    assert sorted((b.channel, [str(i) for i in b.delivery_ids]) for b in OutboxBatch.objects.all()) == [
        ("email", queued["email"]), ("sms", queued["sms"])]
    # Marked as handed to the relay when written; the suppressed one never is.
    assert not deliveries.filter(status="queued", published_at__isnull=True).exists()
    assert deliveries.get(status="suppressed").published_at is None
    backlog = metrics.outbox_backlog()
    assert {c: n for c, (n, _) in backlog.items()} == {"email": 9, "sms": 4}
    versions = _row_versions(queued["email"] + queued["sms"])

    assert relay_once() == 13
    for channel, ids in queued.items():
        tasks = queued_tasks(channel)
        assert sorted(len(t["args"][0]) for t in tasks) == ([1, 4, 4] if channel == "email" else [4])
        assert sorted(i for t in tasks for i in t["args"][0]) == ids
    assert not OutboxBatch.objects.exists()
    assert _row_versions(queued["email"] + queued["sms"]) == versions  # no delivery row written again
    assert metrics.outbox_backlog() == {}
    assert relay_once() == 0


def test_batch_rows_stay_when_the_broker_refuses_and_the_dispatcher_publishes_the_old_ones(
        api, app_key, settings, empty_queues, monkeypatch):
    """A failed publish rolls the batch row's deletion back; with no relay running, the
    dispatcher's backstop publishes batch rows older than NOTIFY_REPUBLISH_AFTER, not fresh ones."""
    from kombu.exceptions import OperationalError as BrokerError

    from notify.maintenance import dispatch_due

    settings.NOTIFY_REPUBLISH_AFTER = 60
    make(app_key[0], "b1")
    body = start(api, {"all": True}).json()
    run_all(body["id"])
    [row] = OutboxBatch.objects.all()

    with broker_unreachable(monkeypatch), pytest.raises(BrokerError):
        relay_once()
    assert list(OutboxBatch.objects.values_list("id", "delivery_ids")) == [(row.id, row.delivery_ids)]
    assert queue_depths()["email"] == 0

    assert dispatch_due() == 0  # fresh: the relay's
    OutboxBatch.objects.update(created_at=timezone.now() - dt.timedelta(seconds=120))
    assert dispatch_due() == 1
    assert [t["args"] for t in queued_tasks("email")] == [[[str(i) for i in row.delivery_ids]]]
    assert not OutboxBatch.objects.exists()


def test_a_delivery_waiting_in_a_batch_row_is_not_taken_for_a_message_the_broker_lost(api, app_key):
    """The dispatcher's sweep puts back into the outbox what was published long ago and never
    claimed. A broadcast's deliveries are marked published when written: while their batch row
    waits (the broker down longer than NOTIFY_REPUBLISH_STALE_AFTER), the row will publish them,
    and unpublishing them too would send each in two messages and write every row again."""
    for i in range(3):
        make(app_key[0], f"w{i}")
    body = start(api, {"all": True}).json()
    run_all(body["id"])
    long_ago = timezone.now() - dt.timedelta(hours=1)
    deliveries = Delivery.objects.filter(notification__broadcast_id=body["id"])
    deliveries.update(published_at=long_ago)
    OutboxBatch.objects.update(created_at=long_ago)
    assert store.unpublish_stale(900, 100) == 0
    assert not deliveries.filter(published_at__isnull=True).exists()

    # Published by the relay and then lost by the broker: the sweep takes them.
    OutboxBatch.objects.all().delete()
    assert store.unpublish_stale(900, 100) == 3
    assert deliveries.filter(published_at__isnull=True).count() == 3


def test_the_relay_goes_on_at_once_while_batch_rows_remain(api, app_key, empty_queues):
    """A round takes a few batch rows; with more waiting the relay must start the next round at
    once, not wait for a wake-up that the fan-out already sent."""
    from notify.outbox import BATCH_ROWS_PER_ROUND, relay_round

    make(app_key[0], "g0")
    body = start(api, {"all": True}).json()
    run_all(body["id"])
    [row] = OutboxBatch.objects.all()
    OutboxBatch.objects.bulk_create([OutboxBatch(channel=row.channel, delivery_ids=row.delivery_ids)
                                     for _ in range(BATCH_ROWS_PER_ROUND)])
    OutboxBatch.objects.update(created_at=row.created_at)  # the database's clock, as a fan-out writes it
    assert relay_round() == (BATCH_ROWS_PER_ROUND, True)
    assert relay_round() == (1, False)
    assert not OutboxBatch.objects.exists()


def test_the_dispatcher_restarts_a_stalled_fan_out(api, app_key, empty_queues):
    from notify.maintenance import dispatch_due

    make(app_key[0], "s1")
    body = start(api, {"all": True}).json()
    Broadcast.objects.filter(pk=body["id"]).update(progressed_at=timezone.now() - dt.timedelta(minutes=5))
    fresh = start(api, {"all": True}).json()  # progressing: left alone
    dispatch_due()
    tasks = [t for t in queued_tasks("maintenance") if t["task"] == "notify.maintenance.fan_out_broadcast"]
    assert [t["args"] for t in tasks] == [[body["id"]]]
    assert fresh["id"] != body["id"]


def test_a_task_writes_batches_for_its_time_then_hands_over_to_the_next(api, app_key, settings, empty_queues):
    settings.NOTIFY_BROADCAST_BATCH = 10
    for i in range(25):
        make(app_key[0], f"r{i:02}")
    body = start(api, {"all": True}).json()
    assert broadcast.run(body["id"], seconds=0) == 10  # out of time after one batch: the next task queued
    tasks = [t for t in queued_tasks("maintenance") if t["task"] == "notify.maintenance.fan_out_broadcast"]
    assert [t["args"] for t in tasks] == [[body["id"]]]
    assert broadcast.run(body["id"], seconds=60) == 15  # the rest, in two batches and a last empty one
    assert Broadcast.objects.get(pk=body["id"]).status == "done"
    assert queued_tasks("maintenance") == tasks  # the first run's only: done, nothing queued after it
    assert len(recipients_of(body["id"])) == 25


def test_variants_are_assigned_per_recipient_as_a_single_send_assigns_them(api, app_key):
    app = app_key[0]
    template = Template.objects.create(app=app, name="ab", default_locale="en")
    content = {"en": {"email": {"subject": "S {{ order }}", "text": "T"}}}
    TemplateVersion.objects.create(template=template, number=1, content=content, published_at=timezone.now(),
                                   variants=[{"name": "a", "weight": 30, "content": content},
                                             {"name": "b", "weight": 70, "content": {"en": {"email": {
                                                 "subject": "B {{ order }}", "text": "T"}}}}])
    for i in range(60):
        make(app, f"v{i}")
    response = api.post(URL, {"template": "ab", "data": {"order": "1"}, "segment": {"all": True}}, format="json")
    run_all(response.json()["id"])
    rows = Delivery.objects.filter(notification__broadcast_id=response.json()["id"]).select_related(
        "notification__recipient")
    assert len(rows) == 60
    for d in rows:
        expected = assign_variant(TemplateVersion.objects.get(template=template).variants,
                                  f"{app.id}:{d.notification.recipient.external_id}", f"{template.id}:1")
        assert d.variant == expected["name"]
        assert d.notification.content["email"]["subject"] == ("S 1" if d.variant == "a" else "B 1")
    assert {d.variant for d in rows} == {"a", "b"}


@pytest.mark.parametrize("body, status, code", [
    ({"template": "nope", "data": DATA, "segment": {"all": True}}, 404, "template_not_found"),
    ({"template": "order-shipped", "template_version": 9, "data": DATA, "segment": {"all": True}}, 404,
     "template_version_not_found"),
    ({"template": "order-shipped", "data": {"name": "x"}, "segment": {"all": True}}, 400, "missing_variables"),
    ({"template": "order-shipped", "data": DATA, "segment": {"locale": "de"}}, 422, "empty_segment"),
    ({"template": "order-shipped", "data": DATA, "segment": {}}, 400, "invalid_request"),
    ({"template": "order-shipped", "data": DATA, "segment": {"all": True, "tags": ["vip"]}}, 400, "invalid_request"),
    ({"template": "order-shipped", "data": DATA, "segment": {"tags": ["No!"]}}, 400, "invalid_request"),
    ({"template": "order-shipped", "data": DATA, "segment": {"planet": "mars"}}, 400, "invalid_request"),
    ({"template": "order-shipped", "data": DATA, "segment": {"external_ids": ["x"] * 1001}}, 400, "invalid_request"),
    # A send's options a broadcast has not, and any other unknown field: refused, not dropped
    # (dropped, a send_at meant for later went at once).
    ({"template": "order-shipped", "data": DATA, "segment": {"all": True}, "send_at": "2030-01-01T00:00:00Z"}, 400,
     "invalid_request"),
    ({"template": "order-shipped", "data": DATA, "segment": {"all": True}, "fallback": [["sms"]]}, 400,
     "invalid_request"),
    # "all" is a JSON true: "yes", "on" or 1 would otherwise be read as a send to everyone.
    ({"template": "order-shipped", "data": DATA, "segment": {"all": "yes"}}, 400, "invalid_request"),
    ({"template": "order-shipped", "data": DATA, "segment": {"all": 1}}, 400, "invalid_request"),
])
def test_bad_input_is_refused_with_a_code_and_nothing_written(api, people, body, status, code):
    response = api.post(URL, body, format="json")
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    assert Broadcast.objects.count() == 0 and Notification.objects.count() == 0
    extra = set(body) - {"template", "template_version", "data", "segment"}
    if extra:
        assert set(response.json()["error"]["reasons"]) == extra
    elif body["segment"].get("all") not in (None, True):
        assert set(response.json()["error"]["reasons"]) == {"segment.all"}
    elif not body["segment"]:  # no filter: a reason of its own, not the 422's empty_segment
        assert response.json()["error"]["reasons"] == {"segment.all": ["no_filter"]}


def test_a_retry_with_the_same_idempotency_key_answers_the_first_broadcast(api, people):
    body = {"template": "order-shipped", "data": DATA, "segment": {"all": True}}
    first = api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="campaign-7")
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    broadcast.fan_out(first.json()["id"], 2)  # it has moved on meanwhile
    written_before = Broadcast.objects.get(pk=first.json()["id"]).written

    again = api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="campaign-7")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == {**first.json(), "status": "running"}
    assert Broadcast.objects.count() == 1
    assert Broadcast.objects.get().written == written_before  # nothing fanned out by the retry

    other_body = api.post(URL, {**body, "data": {**DATA, "order": "B-2"}}, format="json",
                          HTTP_IDEMPOTENCY_KEY="campaign-7")
    assert other_body.status_code == 409 and other_body.json()["error"]["code"] == "idempotency_key_reused"
    bad_key = api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="with space")
    assert bad_key.status_code == 400 and set(bad_key.json()["error"]["reasons"]) == {"Idempotency-Key"}
    assert Broadcast.objects.count() == 1
    # Without a key each call is a broadcast of its own; the key is the app's own.
    assert api.post(URL, body, format="json").json()["id"] != first.json()["id"]
    _, other_key = demo.create_app("other-app")
    from rest_framework.test import APIClient

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    theirs = other.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="campaign-7")
    assert theirs.status_code == 202 and "Idempotent-Replayed" not in theirs.headers
    assert Broadcast.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_twin_gets_the_broadcast_that_committed_first(app_key, monkeypatch):
    """Two calls with one key at once: the second's insert waits on the key's unique index for
    the first's commit, then answers the first's broadcast (no 500, no second broadcast)."""
    from rest_framework.test import APIClient

    app, key = app_key
    make(app, "t1")
    body = {"template": "order-shipped", "data": DATA, "segment": {"all": True}}
    inserted, go = threading.Event(), threading.Event()
    answers = {}
    real_on_commit = transaction.on_commit

    def hold_the_first(func, *args, **kwargs):
        if threading.current_thread().name == "first":  # its row is written, not committed
            inserted.set()
            assert go.wait(10)
        return real_on_commit(func, *args, **kwargs)

    monkeypatch.setattr(broadcast.transaction, "on_commit", hold_the_first)

    def call(name):
        # Not re-raising a view's exception: the test client's signal would hand one thread's
        # to the other's client too.
        client = APIClient(raise_request_exception=False)
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        try:
            answers[name] = client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="twin")
        finally:
            connection.close()

    first = threading.Thread(target=call, args=("first",), name="first")
    second = threading.Thread(target=call, args=("second",), name="second")
    first.start()
    assert inserted.wait(10)
    second.start()
    second.join(1.0)
    assert second.is_alive()  # waiting for the first's commit
    go.set()
    first.join(10)
    second.join(10)
    assert answers["first"].status_code == 202 and answers["second"].status_code == 202, answers["second"].content
    assert answers["second"].json()["id"] == answers["first"].json()["id"]
    assert answers["second"].headers["Idempotent-Replayed"] == "true"
    assert Broadcast.objects.count() == 1


def test_another_apps_broadcast_is_unknown(api, people):
    other_app, other_key = demo.create_app("other-app")
    from rest_framework.test import APIClient

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    theirs = other.post(URL, {"template": "order-shipped", "data": DATA, "segment": {"all": True}}, format="json")
    assert theirs.status_code == 202
    assert api.get(f"{URL}/{theirs.json()['id']}").status_code == 404
    assert api.post(f"{URL}/{theirs.json()['id']}/cancel").status_code == 404
    assert api.get(URL).json() == []


# --- the admin, in a real browser ------------------------------------------------------------------

@pytest.fixture
def browser(tmp_path_factory):
    from tests.browser import start_chromium

    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), "chromedriver-broadcast.log")
    yield driver
    driver.quit()


@pytest.mark.django_db(transaction=True)
def test_admin_shows_progress_and_cancels_in_the_browser(browser, live_server, api, app_key):
    from django.contrib.auth.models import User
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.browser import click_to_load

    app = app_key[0]
    for i in range(12):
        make(app, f"a{i:02}")
    body = start(api, {"all": True}).json()
    broadcast.fan_out(body["id"], 5)  # 5 written; the rest never will be once cancelled
    sent = Delivery.objects.filter(notification__broadcast_id=body["id"]).order_by("id").first()
    Delivery.objects.filter(pk=sent.pk).update(status="sent")
    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    browser.get(f"{live_server.url}/admin/login/?next=/admin/notify/broadcast/")
    browser.find_element(By.ID, "id_username").send_keys("ops")
    browser.find_element(By.ID, "id_password").send_keys("pw-for-tests-only")
    click_to_load(browser, "#login-form input[type=submit]")

    def cells() -> dict[str, str]:
        row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
        return {name: row.find_element(By.CSS_SELECTOR, f"td.field-{name}").text
                for name in ("status", "progress_total", "progress_written", "progress_queued", "progress_sent",
                             "progress_cancelled", "progress_pending")}

    assert cells() == {"status": "Running", "progress_total": "12", "progress_written": "5", "progress_queued": "5",
                       "progress_sent": "1", "progress_cancelled": "0", "progress_pending": "4"}
    browser.find_element(By.CSS_SELECTOR, "#result_list tbody input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("cancel_broadcasts")
    click_to_load(browser, "button[name=index]")
    assert "1 broadcasts cancelled, 4 deliveries cancelled" in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    assert cells()["status"] == "Cancelled" and cells()["progress_pending"] == "0"
    assert cells()["progress_cancelled"] == "4"  # where the rest went: sent + cancelled = queued
    assert broadcast.fan_out(body["id"], 5) == (0, "cancelled")
    assert Notification.objects.filter(broadcast_id=body["id"]).count() == 5


# --- end to end (last: its stack's maintenance worker would run the fan-out tests' tasks) --------

@pytest.mark.stack
@pytest.mark.django_db(transaction=True)
def test_a_small_broadcast_is_delivered_end_to_end_through_the_sandbox(stack, control):
    key = demo.create_app("broadcast-e2e")[1]
    people = {"ana": {"email": "ana@example.com", "phone": "+821011112222", "tags": ["vip"]},
              "bo": {"email": "bo@example.com", "tags": ["vip"]},
              "cy": {"phone": "+821033334444", "tags": ["vip"]},
              "dee": {"email": "dee@example.com", "tags": ["other"]}}
    for user, fields in people.items():
        status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}", fields)
        assert status == 201, body
    status, body = demo.call(stack.api_url, key, "PUT", "/api/v1/recipients/bo/preferences",
                             {"preferences": [{"channel": "email", "enabled": False}]})
    assert status == 200, body
    status, started = demo.call(stack.api_url, key, "POST", "/api/v1/broadcasts", {
        "template": "order-shipped", "data": {"name": "회원", "order": "VIP-9"}, "segment": {"tags": ["vip"]}})
    assert status == 202 and started["total"] == 3, started

    def finished():
        _, progress = demo.call(stack.api_url, key, "GET", f"/api/v1/broadcasts/{started['id']}")
        return progress if progress["status"] == "done" and progress["pending"] == 0 else None

    progress = wait_until(finished, timeout=60, message="the broadcast's deliveries to finish")
    assert {k: progress[k] for k in ("total", "written", "queued", "sent", "failed", "suppressed")} == {
        "total": 3, "written": 3, "queued": 3, "sent": 3, "failed": 0, "suppressed": 1}
    emails = [r for r in control.records("ses") if r.get("accepted")]
    assert [r["to"] for r in emails] == ["ana@example.com"]
    assert "VIP-9" in emails[0]["body"]["Content"]["Simple"]["Subject"]["Data"]
    texts = sorted((r["body"]["To"], r["body"]["Body"]) for r in control.records("twilio") if r.get("accepted"))
    assert texts == [(phone, "[notify] 회원님, 주문 VIP-9 발송 완료 📦") for phone in ("+821011112222", "+821033334444")]

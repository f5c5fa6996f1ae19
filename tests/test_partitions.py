"""Partitioned history (notify.partitions, migration 0014): deliveries and their log in one
partition per UTC day, rows outside every day in DEFAULT, retention by dropping whole days (never
one with an unfinished delivery), and the conversion of an existing installation's tables with
their rows kept. All on the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import importlib
import types
import uuid

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from devtools import demo
from notify import maintenance, partitions
from notify.models import Delivery, DeliveryEvent, DeliveryLog, Notification, Recipient
from tests.helpers import dangling_delivery_references

migration = importlib.import_module("notify.migrations.0014_partitioned_history")


def utc_today() -> dt.date:
    with connection.cursor() as cursor:
        return partitions.today(cursor)


def names(table: str) -> list[str]:
    with connection.cursor() as cursor:
        return [p.name for p in partitions.partitions(cursor, table)]


def where(table: str, row_id) -> str:
    """The partition holding row ``row_id`` of ``table``."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE id = %s", [row_id])
        return cursor.fetchone()[0]


def notification(app, recipient) -> Notification:
    return Notification.objects.create(app=app, recipient=recipient, request_hash="h", content={}, ttl=60,
                                       expires_at=timezone.now() + dt.timedelta(minutes=1), response={})


def delivery(n: Notification, status: str, created_at: dt.datetime | None = None) -> Delivery:
    d = Delivery.objects.create(notification=n, channel="sms", address="+821012345678", status=status)
    if created_at is not None:  # auto_now_add: set after (the row moves to its partition)
        Delivery.objects.filter(id=d.id).update(created_at=created_at)
    return d


def settle() -> None:
    """Run the deferred foreign-key checks of the test's transaction now: PostgreSQL refuses to
    drop a table with pending trigger events (in production each insert has committed long
    before its day is dropped)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


@pytest.fixture
def people(db, _fresh_cache):
    app, _ = demo.create_app("partitions")
    return app, Recipient.objects.create(app=app, external_id=f"p-{uuid.uuid4().hex[:8]}", phone="+821012345678")


def test_migrate_leaves_both_tables_partitioned_by_day_with_the_days_ahead_and_a_default(db):
    today = utc_today()
    with connection.cursor() as cursor:
        for table in partitions.TABLES:
            assert partitions.is_partitioned(cursor, table)
            found = partitions.partitions(cursor, table)
            assert found[0].default and found[0].name == f"{table}_default"
            days = [p for p in found if not p.default]
            # A new installation (the test database) has no legacy partition: day partitions from today.
            assert [p.name for p in days] == [
                partitions.day_name(table, today + dt.timedelta(days=i))
                for i in range(settings.NOTIFY_HISTORY_PARTITIONS_AHEAD + 1)]
            assert all(p.upper - p.lower == dt.timedelta(days=1) and p.lower.tzinfo is not None for p in days)
        cursor.execute("""SELECT a.attname FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid
                          AND a.attnum = ANY(x.indkey) WHERE x.indrelid = 'notify_delivery'::regclass AND x.indisprimary""")
        assert sorted(r[0] for r in cursor.fetchall()) == ["created_at", "id"]
        # The hot paths' partial indexes are the parent's, so every partition has them.
        cursor.execute("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent "
                       "WHERE c.relname IN ('delivery_due', 'delivery_outbox')")
        assert cursor.fetchone()[0] == 2 * (settings.NOTIFY_HISTORY_PARTITIONS_AHEAD + 2)


def test_rows_land_in_their_day_partition_and_outside_every_day_in_default(people):
    app, recipient = people
    today = utc_today()
    n = notification(app, recipient)
    d = delivery(n, "queued")
    entry = DeliveryLog.objects.create(delivery=d, from_status="", to_status="queued")
    assert where("notify_delivery", d.id) == partitions.day_name("notify_delivery", today)
    assert where("notify_deliverylog", entry.id) == partitions.day_name("notify_deliverylog", today)

    # Beyond the days created ahead, or long before: DEFAULT takes the row, the insert never fails.
    later = delivery(n, "queued", timezone.now() + dt.timedelta(days=settings.NOTIFY_HISTORY_PARTITIONS_AHEAD + 30))
    assert where("notify_delivery", later.id) == "notify_delivery_default"
    old = DeliveryLog.objects.create(delivery=d, from_status="queued", to_status="sending")
    DeliveryLog.objects.filter(id=old.id).update(at=timezone.now() - dt.timedelta(days=400))
    assert where("notify_deliverylog", old.id) == "notify_deliverylog_default"
    # Django's look-ups by id see every partition.
    assert Delivery.objects.get(id=later.id).notification_id == n.id
    assert set(d.log.values_list("id", flat=True)) == {entry.id, old.id}

    # The day's partition created later takes its rows out of DEFAULT.
    day = (timezone.now() + dt.timedelta(days=settings.NOTIFY_HISTORY_PARTITIONS_AHEAD + 30)).astimezone(dt.timezone.utc).date()
    with connection.cursor() as cursor:
        assert partitions.create_day(cursor, "notify_delivery", day)
        assert not partitions.create_day(cursor, "notify_delivery", day)  # there already
    assert where("notify_delivery", later.id) == partitions.day_name("notify_delivery", day)


def test_maintenance_creates_days_ahead_and_drops_only_old_days_whose_deliveries_are_all_final(people, settings):
    app, recipient = people
    today = utc_today()
    settings.NOTIFY_HISTORY_RETENTION_DAYS = 90
    settings.NOTIFY_HISTORY_PARTITIONS_AHEAD = settings.NOTIFY_HISTORY_PARTITIONS_AHEAD + 3
    old_day, unfinished_day, recent_day = (today - dt.timedelta(days=k) for k in (100, 95, 10))
    with connection.cursor() as cursor:
        for day in (old_day, unfinished_day, recent_day):
            for table in partitions.TABLES:
                assert partitions.create_day(cursor, table, day)

    def at(day):
        return partitions.midnight(day) + dt.timedelta(hours=5)

    done_n = notification(app, recipient)
    done = delivery(done_n, "sent", at(old_day))
    DeliveryLog.objects.filter(id=DeliveryLog.objects.create(delivery=done, from_status="sending", to_status="sent").id
                               ).update(at=at(old_day))
    DeliveryEvent.objects.create(delivery=done, kind="delivered", occurred_at=at(old_day))
    waiting_n = notification(app, recipient)
    waiting = delivery(waiting_n, "retrying", at(unfinished_day))
    DeliveryLog.objects.filter(id=DeliveryLog.objects.create(delivery=waiting, from_status="sending",
                                                             to_status="retrying").id).update(at=at(unfinished_day))
    recent = delivery(notification(app, recipient), "sent", at(recent_day))
    # A notification whose deliveries span the dropped day and a kept one (a fallback step sent
    # days later) stays with the kept delivery.
    spanning_n = notification(app, recipient)
    delivery(spanning_n, "failed", at(old_day))
    spanning = delivery(spanning_n, "sent", at(recent_day))
    settle()

    assert maintenance.maintain_history() > 0
    ahead = settings.NOTIFY_HISTORY_PARTITIONS_AHEAD
    for table in partitions.TABLES:
        assert partitions.day_name(table, today + dt.timedelta(days=ahead)) in names(table)
        assert partitions.day_name(table, today + dt.timedelta(days=ahead + 1)) not in names(table)
    # The old day is gone with its deliveries' events and log, and the notification left without one.
    assert partitions.day_name("notify_delivery", old_day) not in names("notify_delivery")
    assert partitions.day_name("notify_deliverylog", old_day) not in names("notify_deliverylog")
    assert not Delivery.objects.filter(id=done.id).exists()
    assert not DeliveryEvent.objects.filter(delivery_id=done.id).exists()
    assert not Notification.objects.filter(id=done_n.id).exists()
    # The day past retention holding a retrying delivery stays, with its log; a recent day too.
    assert partitions.day_name("notify_delivery", unfinished_day) in names("notify_delivery")
    assert partitions.day_name("notify_deliverylog", unfinished_day) in names("notify_deliverylog")
    assert Delivery.objects.filter(id__in=[waiting.id, recent.id]).count() == 2
    assert waiting.log.count() == 1 and Notification.objects.filter(id=waiting_n.id).exists()
    assert list(Delivery.objects.filter(notification=spanning_n).values_list("id", flat=True)) == [spanning.id]
    assert dangling_delivery_references() == {"notification": 0, "device": 0}

    # Once it is final, the next run drops it (and then its log).
    Delivery.objects.filter(id=waiting.id).update(status="expired")
    settle()
    done = partitions.maintain(ahead=1, retention_days=90)
    assert set(done.dropped) == {partitions.day_name(t, unfinished_day) for t in partitions.TABLES}
    assert not Notification.objects.filter(id=waiting_n.id).exists()

    # Retention 0 keeps everything.
    assert partitions.maintain(ahead=1, retention_days=0, day=today + dt.timedelta(days=365)).dropped == []


@pytest.mark.parametrize("status", ["standby", "queued", "scheduled"])
def test_a_partition_holding_an_unfinished_delivery_is_refused(people, status):
    app, recipient = people
    day = utc_today() - dt.timedelta(days=200)
    with connection.cursor() as cursor:
        partitions.create_day(cursor, "notify_delivery", day)
        [partition] = [p for p in partitions.partitions(cursor, "notify_delivery")
                       if p.name == partitions.day_name("notify_delivery", day)]
    d = delivery(notification(app, recipient), status, partitions.midnight(day) + dt.timedelta(hours=1))
    delivery(notification(app, recipient), "failed", partitions.midnight(day) + dt.timedelta(hours=2))
    settle()
    assert partitions.drop_delivery_partition(partition) == (False, 0, 0)
    assert Delivery.objects.filter(id=d.id).exists()
    assert partitions.maintain(ahead=1, retention_days=30).kept == [partition.name]


# -- the conversion of an existing installation ---------------------------------------------------
SCHEMA = "partition_conversion"
#: The tables as migrations 0001-0013 left them (pg_dump of a 0013 database), FKs to the real
#: notifications.
OLD_SHAPE = f"""
CREATE SCHEMA {SCHEMA};
SET search_path TO {SCHEMA}, public;
CREATE TABLE notify_delivery (
    id uuid NOT NULL, channel varchar(16) NOT NULL, address text NOT NULL, status varchar(16) NOT NULL,
    reason varchar(128) NOT NULL, attempts integer NOT NULL, provider_message_id varchar(255) NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, published_at timestamptz,
    next_attempt_at timestamptz, lease_until timestamptz, unknown_outcome boolean NOT NULL, sent_at timestamptz,
    device_id bigint, notification_id uuid NOT NULL, provider varchar(32) NOT NULL, variant varchar(32) NOT NULL,
    step smallint NOT NULL,
    CONSTRAINT notify_delivery_attempts_check CHECK ((attempts >= 0)),
    CONSTRAINT notify_delivery_step_check CHECK ((step >= 0)));
CREATE TABLE notify_deliverylog (
    id bigint NOT NULL GENERATED BY DEFAULT AS IDENTITY, at timestamptz NOT NULL, from_status varchar(16) NOT NULL,
    to_status varchar(16) NOT NULL, attempt integer NOT NULL, reason varchar(128) NOT NULL, provider_status integer,
    provider_answer jsonb, duration_ms double precision, delivery_id uuid NOT NULL,
    CONSTRAINT notify_deliverylog_attempt_check CHECK ((attempt >= 0)),
    CONSTRAINT notify_deliverylog_provider_status_check CHECK ((provider_status >= 0)));
CREATE TABLE notify_deliveryevent (
    id bigint NOT NULL GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, kind varchar(16) NOT NULL,
    occurred_at timestamptz NOT NULL, received_at timestamptz NOT NULL, reason varchar(128) NOT NULL, data jsonb,
    delivery_id uuid NOT NULL, CONSTRAINT delivery_event_once UNIQUE (delivery_id, kind));
ALTER TABLE ONLY notify_delivery ADD CONSTRAINT notify_delivery_pkey PRIMARY KEY (id);
ALTER TABLE ONLY notify_deliverylog ADD CONSTRAINT notify_deliverylog_pkey PRIMARY KEY (id);
CREATE INDEX delivery_due ON notify_delivery USING btree (status, next_attempt_at)
    WHERE ((status)::text = ANY ((ARRAY['queued'::varchar, 'retrying'::varchar, 'sending'::varchar, 'scheduled'::varchar])::text[]));
CREATE INDEX delivery_outbox ON notify_delivery USING btree (created_at) WHERE ((published_at IS NULL) AND ((status)::text = 'queued'::text));
CREATE INDEX deliverylog_at ON notify_deliverylog USING btree (at);
CREATE INDEX notify_deli_deliver_730165_idx ON notify_deliverylog USING btree (delivery_id, at);
CREATE INDEX notify_delivery_device_id_baa91765 ON notify_delivery USING btree (device_id);
CREATE INDEX notify_delivery_notification_id_bf0f2066 ON notify_delivery USING btree (notification_id);
CREATE INDEX notify_deliverylog_delivery_id_afb562cd ON notify_deliverylog USING btree (delivery_id);
ALTER TABLE ONLY notify_delivery ADD CONSTRAINT notify_delivery_notification_id_bf0f2066_fk_notify_no
    FOREIGN KEY (notification_id) REFERENCES public.notify_notification(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE ONLY notify_deliveryevent ADD CONSTRAINT notify_deliveryevent_delivery_id_5f5ace14_fk_notify_delivery_id
    FOREIGN KEY (delivery_id) REFERENCES notify_delivery(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE ONLY notify_deliverylog ADD CONSTRAINT notify_deliverylog_delivery_id_afb562cd_fk_notify_delivery_id
    FOREIGN KEY (delivery_id) REFERENCES notify_delivery(id) DEFERRABLE INITIALLY DEFERRED;
"""
ROWS = """
INSERT INTO notify_delivery (id, channel, address, status, reason, attempts, provider_message_id, created_at,
    updated_at, unknown_outcome, notification_id, provider, variant, step)
SELECT gen_random_uuid(), 'sms', '+8210' || i, CASE WHEN i %% 7 = 0 THEN 'queued' ELSE 'sent' END, '', 1, '',
       now() - make_interval(mins => i * 17), now(), false, %s::uuid, '', '', 0
FROM generate_series(1, 3000) i;
INSERT INTO notify_deliverylog (at, from_status, to_status, attempt, reason, delivery_id)
SELECT created_at + interval '1 second', 'queued', status, 1, '', id FROM notify_delivery;
INSERT INTO notify_deliveryevent (kind, occurred_at, received_at, reason, delivery_id)
SELECT 'delivered', created_at, created_at, '', id FROM notify_delivery WHERE status = 'sent' LIMIT 100;
"""


def _fingerprint(cursor, table: str) -> tuple:
    cursor.execute(f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t")
    return cursor.fetchone()


@pytest.fixture
def old_shape(transactional_db, _fresh_cache):
    """The three tables in their unpartitioned shape, with rows, in a schema of their own first on
    the search path (the migration's functions name tables unqualified)."""
    app, _ = demo.create_app("conversion")
    recipient = Recipient.objects.create(app=app, external_id="conv", phone="+821012345678")
    n = notification(app, recipient)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            cursor.execute(OLD_SHAPE)
            cursor.execute(ROWS, [str(n.id)])
        yield n
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO public")
            cursor.execute(f"DROP SCHEMA {SCHEMA} CASCADE")


def test_conversion_of_tables_with_rows_keeps_every_row_and_attaches_the_old_table_as_is(old_shape):
    with connection.cursor() as cursor:
        before = {t: _fingerprint(cursor, t) for t in ("notify_delivery", "notify_deliverylog", "notify_deliveryevent")}
        assert before["notify_delivery"][0] == 3000
        cursor.execute("SELECT max(id) FROM notify_deliverylog")
        last_log_id = cursor.fetchone()[0]
        cursor.execute("SELECT oid FROM pg_class WHERE relname IN ('delivery_due', 'notify_deli_deliver_730165_idx') "
                       f"AND relnamespace = '{SCHEMA}'::regnamespace ORDER BY relname")
        old_indexes = [r[0] for r in cursor.fetchall()]

    editor = types.SimpleNamespace(connection=connection)
    migration.drop_foreign_keys_to_delivery(None, editor)
    migration.partition(None, editor)

    today = utc_today()
    cutover = partitions.midnight(today + dt.timedelta(days=partitions.CUTOVER_DAYS))
    with connection.cursor() as cursor:
        assert {t: _fingerprint(cursor, t) for t in before} == before
        for table in partitions.TABLES:
            assert partitions.is_partitioned(cursor, table)
            found = partitions.partitions(cursor, table)
            legacy = next(p for p in found if p.name == f"{table}_legacy")
            assert legacy.lower is None and legacy.upper == cutover
            assert [p.name for p in found if not p.default and p.lower and p.lower >= cutover][0] == \
                partitions.day_name(table, today + dt.timedelta(days=partitions.CUTOVER_DAYS))
            cursor.execute(f"SELECT count(*) FROM {table}_legacy")
            assert cursor.fetchone()[0] == before[table][0]
            cursor.execute(f"SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass('{table}_legacy') "
                           "AND conname LIKE '%%before_cutover'")
            assert cursor.fetchone()[0] == 0
        # The old indexes were attached (same relation: nothing rebuilt), renamed …_legacy.
        cursor.execute("SELECT c.oid, c.relname, p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "JOIN pg_class p ON p.oid = i.inhparent WHERE c.oid = ANY(%s) ORDER BY c.relname", [old_indexes])
        assert [(r[1], r[2]) for r in cursor.fetchall()] == [
            ("delivery_due_legacy", "delivery_due"), ("notify_deli_deliver_730165_idx_legacy", "notify_deli_deliver_730165_idx")]
        # The redundant (delivery_id) index of the log is gone; the FKs to delivery(id) too.
        cursor.execute("SELECT to_regclass('notify_deliverylog_delivery_id_afb562cd')")
        assert cursor.fetchone()[0] is None
        cursor.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = to_regclass('notify_delivery')")
        assert cursor.fetchone()[0] == 0
        # The FK to the notifications carried over, on every partition.
        cursor.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = to_regclass('notify_delivery')")
        assert cursor.fetchone()[0] == 1

        # New rows: the log's ids go on from the old sequence; now() lands in the legacy partition
        # (until the cutover), a row at the cutover in its day.
        cursor.execute("""INSERT INTO notify_deliverylog (at, from_status, to_status, attempt, reason, delivery_id)
                          VALUES (now(), '', 'queued', 0, '', gen_random_uuid()),
                                 (%s, '', 'queued', 0, '', gen_random_uuid())
                          RETURNING id, tableoid::regclass::text""", [cutover])
        rows = cursor.fetchall()
        assert [r[0] for r in rows] == [last_log_id + 1, last_log_id + 2]
        assert [r[1] for r in rows] == ["notify_deliverylog_legacy",
                                        partitions.day_name("notify_deliverylog", cutover.date())]
        cursor.execute("""INSERT INTO notify_delivery (id, channel, address, status, reason, attempts, provider_message_id,
                              created_at, updated_at, unknown_outcome, notification_id, provider, variant, step)
                          SELECT gen_random_uuid(), 'sms', '', 'queued', '', 0, '', now(), now(), false, %s, '', '', 0
                          RETURNING tableoid::regclass::text""", [str(old_shape.id)])
        assert cursor.fetchone()[0] == "notify_delivery_legacy"

    # Run again (an interrupted migration is re-run): nothing to do.
    assert partitions.convert(connection, "notify_delivery", ahead=1) == "already partitioned"
    # Retention drops the legacy partition as a whole once the cutover is past retention.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE notify_delivery SET status = 'sent' WHERE status = 'queued'")
    done = partitions.maintain(ahead=1, retention_days=30, day=today + dt.timedelta(days=40))
    assert {"notify_delivery_legacy", "notify_deliverylog_legacy"} <= set(done.dropped)
    assert done.events == 100

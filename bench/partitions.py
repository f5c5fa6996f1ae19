"""Partitioned history benchmark: the hot paths on day-partitioned deliveries and log next to the
same rows in plain tables, in one run.

Builds its own database (``NOTIFY_DB_NAME``, default ``notify_bench_partitions``, dropped and
migrated again each run), fills the partitioned ``notify_delivery`` / ``notify_deliverylog``
(migration 0014) with ``--deliveries`` deliveries (two per notification, one log row each, a
delivered event for one in ten) spread over ``--days`` daily partitions, in SQL
(generate_series), and copies them into unpartitioned tables of the same shape (primary key
``id`` alone, the same indexes) in a schema ``flat`` put first on the search path of a second
connection. Then, on each, the statements of notify.store as the processes run them (prepared,
in a transaction rolled back after each run), median of ``--runs``:

- the worker's claim of 50 queued ids (``claim_batch``) and the outcomes of those 50
  (``record_outcomes``);
- a webhook's event by delivery id (``record_delivery_event``);
- the relay's pick (``take_outbox``, 1000 rows) and the dispatcher's sweeps (``move_due``,
  ``unpublish_stale``);

then the partitioned table's look-ups again with 60 more (empty) day partitions (≈ 90 days of
retention plus the 7 ahead), the creation of a day partition, and retention: dropping the oldest
day (with its events and notifications) against deleting that day's rows from the plain tables.

    .venv/bin/python bench/partitions.py [--deliveries 2000000] [--days 30] [--runs 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import time

import psycopg

os.environ.setdefault("NOTIFY_DB_NAME", "notify_bench_partitions")
from _setup import setup_django  # noqa: E402

#: The queued, due, scheduled and leased-out rows of the last hour: what the hot paths look for.
LIVE = {"queued_unpublished": 3000, "queued_published": 3000, "retrying_due": 1000, "scheduled": 1000,
        "sending_expired": 200}


#: SQL: a UUIDv7 (RFC 9562) carrying the time ``at``, its other bits from md5(``seed``) with the
#: version and variant set, as the API's ids (notify.ids) carry the time their rows were written.
_V7_OF = ("(lpad(to_hex((extract(epoch FROM {at}) * 1000)::bigint), 12, '0') || '7' || substr(md5({seed}), 14, 3)"
          " || '8' || substr(md5({seed}), 18, 15))::uuid")

def recreate_database(name: str) -> None:
    with psycopg.connect(dbname="postgres", host=os.environ.get("NOTIFY_DB_HOST", "127.0.0.1"),
                         user=os.environ.get("NOTIFY_DB_USER", "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")


def fill(cursor, app_id: int, deliveries: int, days: int) -> None:
    """The history: ``deliveries`` final deliveries over the last ``days`` days (the rows of a
    day in time order, as written), then the live ones of the last hour."""
    notifications = deliveries // 2
    from notify.models import Recipient

    Recipient.objects.bulk_create([Recipient(app_id=app_id, external_id=f"r-{i}", phone=f"+8210{10000000 + i}")
                                   for i in range(1000)])
    cursor.execute("SELECT min(id) FROM notify_recipient")
    first_recipient = cursor.fetchone()[0]
    span = f"interval '{days} days'"
    cursor.execute(f"""
        CREATE TEMP TABLE plan AS
        SELECT md5('n' || n)::uuid AS notification_id, n,
               now() - {span} + (n::float8 / {notifications}) * ({span} - interval '2 hours') AS created_at
        FROM generate_series(0, {notifications - 1}) n""")
    cursor.execute(f"""
        INSERT INTO notify_notification (id, app_id, recipient_id, request_hash, category, locale, data, content,
            priority, ttl, expires_at, response, fallback, created_at)
        SELECT notification_id, {app_id}, {first_recipient} + n % 1000, 'h', 'general', 'en', '{{}}', '{{}}',
               'normal', 86400, created_at + interval '1 day', '{{}}', '[]', created_at FROM plan""")
    cursor.execute("""
        INSERT INTO notify_delivery (id, notification_id, channel, provider, variant, step, address, status, reason,
            attempts, provider_message_id, created_at, updated_at, unknown_outcome, sent_at)
        SELECT md5('d' || n || '-' || k)::uuid, notification_id, CASE k WHEN 0 THEN 'sms' ELSE 'email' END, 'x', '',
               0, 'x', 'sent', '', 1, 'm' || n, created_at, created_at + interval '2 seconds', false,
               created_at + interval '2 seconds'
        FROM plan, generate_series(0, 1) k ORDER BY created_at""")
    # The live rows: the last hour, one notification each.
    live = sum(LIVE.values())
    cursor.execute(f"""
        INSERT INTO notify_notification (id, app_id, recipient_id, request_hash, category, locale, data, content,
            priority, ttl, expires_at, response, fallback, created_at)
        SELECT md5('live' || i)::uuid, {app_id}, {first_recipient} + i % 1000, 'h', 'general', 'en', '{{}}', '{{}}',
               'normal', 86400, now() + interval '1 day', '{{}}', '[]', now() - interval '1 hour'
        FROM generate_series(1, {live}) i""")
    start = 1
    for kind, count in LIVE.items():
        status, published, next_attempt, lease = {
            "queued_unpublished": ("queued", "NULL", "NULL", "NULL"),
            "queued_published": ("queued", "now() - interval '1 second'", "NULL", "NULL"),
            "retrying_due": ("retrying", "NULL", "now() - interval '1 minute'", "NULL"),
            "scheduled": ("scheduled", "NULL", "now() + interval '1 day'", "NULL"),
            "sending_expired": ("sending", "now() - interval '2 minutes'", "NULL", "now() - interval '1 minute'"),
        }[kind]
        cursor.execute(f"""
            INSERT INTO notify_delivery (id, notification_id, channel, provider, variant, step, address, status,
                reason, attempts, provider_message_id, created_at, updated_at, unknown_outcome, published_at,
                next_attempt_at, lease_until)
            SELECT {_V7_OF.format(at="now() - interval '1 hour' + i * interval '10 ms'", seed="'live-d' || i")},
                   md5('live' || i)::uuid, 'sms', '', '', 0, '+8210' || i, '{status}', '',
                   {1 if status == 'sending' else 0}, '', now() - interval '1 hour' + i * interval '10 ms',
                   now() - interval '1 hour', false, {published}, {next_attempt}, {lease}
            FROM generate_series({start}, {start + count - 1}) i""")
        start += count
    cursor.execute("""
        INSERT INTO notify_deliverylog (delivery_id, at, from_status, to_status, attempt, reason)
        SELECT id, created_at + interval '1 second', 'sending', status, attempts, '' FROM notify_delivery""")
    cursor.execute("""
        INSERT INTO notify_deliveryevent (delivery_id, kind, occurred_at, received_at, reason)
        SELECT id, 'delivered', created_at + interval '5 seconds', created_at + interval '5 seconds', ''
        FROM notify_delivery WHERE status = 'sent' AND get_byte(uuid_send(id), 0) < 26""")


FLAT = """
CREATE SCHEMA flat;
CREATE TABLE flat.notify_delivery (LIKE public.notify_delivery INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
CREATE TABLE flat.notify_deliverylog (LIKE public.notify_deliverylog INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO flat.notify_delivery SELECT * FROM public.notify_delivery;
INSERT INTO flat.notify_deliverylog SELECT * FROM public.notify_deliverylog;
ALTER TABLE flat.notify_delivery ADD PRIMARY KEY (id);
CREATE INDEX ON flat.notify_delivery (status, next_attempt_at)
    WHERE status IN ('queued', 'retrying', 'sending', 'scheduled');
CREATE INDEX ON flat.notify_delivery (created_at) WHERE status = 'queued' AND published_at IS NULL;
CREATE INDEX ON flat.notify_delivery (notification_id);
CREATE INDEX ON flat.notify_delivery (device_id);
ALTER TABLE flat.notify_deliverylog ADD PRIMARY KEY (id);
CREATE INDEX ON flat.notify_deliverylog (delivery_id, at);
CREATE INDEX ON flat.notify_deliverylog (at);
ANALYZE;
"""


#: Runs not counted: psycopg prepares a statement at its 5th run (settings.DATABASES'
#: prepare_threshold) and PostgreSQL tries a generic plan after 5 more, as a process's connection does.
WARMUP = 12


class Rollback(Exception):
    pass


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def hot_paths(runs: int) -> dict[str, float]:
    """The medians (ms) of the hot paths on this connection (its search path set by the caller)."""
    from django.db import connection, transaction

    from notify import store

    with connection.cursor() as cursor:
        cursor.execute("SELECT id::text FROM notify_delivery WHERE status = 'queued' AND published_at IS NOT NULL")
        queued = [r[0] for r in cursor.fetchall()]
        cursor.execute("SELECT id::text FROM notify_delivery WHERE status = 'sent' AND created_at > now() - interval '3 days'"
                       " LIMIT 2000")
        sent = [r[0] for r in cursor.fetchall()]
    samples: dict[str, list[float]] = {k: [] for k in ("claim 50", "record 50 outcomes", "webhook event", "relay pick 1000",
                                                        "dispatcher move_due", "dispatcher unpublish_stale")}
    rng = random.Random(7)
    for run in range(runs + WARMUP):
        ids = rng.sample(queued, 50)
        took = {}
        try:
            with transaction.atomic():
                t = time.perf_counter()
                claimed = store.claim_batch(ids)
                took["claim 50"] = time.perf_counter() - t
                assert len(claimed) == 50, len(claimed)
                outcomes = [store.Outcome(c["id"], c["attempts"], "sent", "", provider="x", provider_message_id="m",
                                          created_at=c["delivery_created_at"])
                            for c in claimed]
                t = time.perf_counter()
                written = store.record_outcomes(outcomes)
                took["record 50 outcomes"] = time.perf_counter() - t
                assert len(written) == 50
                t = time.perf_counter()
                store.record_delivery_event(rng.choice(sent), "opened", dt.datetime.now(dt.timezone.utc))
                took["webhook event"] = time.perf_counter() - t
                with store.prepared_cursor() as cursor:
                    t = time.perf_counter()
                    rows = store.take_outbox(cursor, 1000, 0)
                    took["relay pick 1000"] = time.perf_counter() - t
                    assert len(rows) == 1000
                t = time.perf_counter()
                store.move_due([], 1000)
                took["dispatcher move_due"] = time.perf_counter() - t
                t = time.perf_counter()
                store.unpublish_stale(30, 1000)
                took["dispatcher unpublish_stale"] = time.perf_counter() - t
                raise Rollback
        except Rollback:
            pass
        if run >= WARMUP:
            for key, value in took.items():
                samples[key].append(value)
    return {key: median_ms(values) for key, values in samples.items()}


def use(schema_first: str | None) -> None:
    """A new connection, with ``schema_first`` ahead of public on its search path."""
    from django.db import connection

    connection.close()
    with connection.cursor() as cursor:
        cursor.execute(f"SET search_path TO {schema_first + ', ' if schema_first else ''}public")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    recreate_database(os.environ["NOTIFY_DB_NAME"])
    began = time.perf_counter()
    setup_django("partitions")
    from django.conf import settings
    from django.db import connection

    from devtools import demo
    from notify import partitions

    app, _ = demo.create_app("bench-partitions")
    with connection.cursor() as cursor:
        today = partitions.today(cursor)
    partitions.ensure_ahead(today - dt.timedelta(days=args.days), today)
    with connection.cursor() as cursor:
        t = time.perf_counter()
        fill(cursor, app.id, args.deliveries, args.days)
        filled = time.perf_counter() - t
        t = time.perf_counter()
        cursor.execute(FLAT)
        copied = time.perf_counter() - t
        cursor.execute("SELECT count(*) FROM notify_delivery")
        total = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM notify_deliverylog")
        log_rows = cursor.fetchone()[0]
        day_parts = len([p for p in partitions.partitions(cursor, "notify_delivery") if not p.default])
    print(f"{total:,} deliveries and {log_rows:,} log rows over {args.days} days: filled in {filled:.0f} s, "
          f"unpartitioned copy in {copied:.0f} s; {day_parts} day partitions + DEFAULT per table "
          f"({settings.NOTIFY_HISTORY_PARTITIONS_AHEAD} ahead)")

    use(None)
    partitioned = hot_paths(args.runs)
    use("flat")
    flat = hot_paths(args.runs)
    use(None)
    with connection.cursor() as cursor:
        extra = partitions.ensure_ahead(today + dt.timedelta(days=settings.NOTIFY_HISTORY_PARTITIONS_AHEAD + 1),
                                        today + dt.timedelta(days=settings.NOTIFY_HISTORY_PARTITIONS_AHEAD + 60))
        many = len([p for p in partitions.partitions(cursor, "notify_delivery") if not p.default])
    assert len(extra) == 120
    use(None)
    wide = hot_paths(args.runs)

    print(f"\nmedian of {args.runs} runs, ms   {'unpartitioned':>14} {f'{day_parts} partitions':>15} "
          f"{f'{many} partitions':>15}")
    for key in partitioned:
        print(f"{key:<28} {flat[key]:>14.2f} {partitioned[key]:>15.2f} {wide[key]:>15.2f}")

    # Creation of a day partition (both tables), with the parent busy with nothing else.
    from django.db import transaction

    day = today + dt.timedelta(days=settings.NOTIFY_HISTORY_PARTITIONS_AHEAD + 61)
    t = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        for table in partitions.TABLES:
            assert partitions.create_day(cursor, table, day)
    created = time.perf_counter() - t

    # Retention of the oldest day: the partitions dropped vs. the plain tables' DELETE.
    with connection.cursor() as cursor:
        oldest = next(p for p in partitions.partitions(cursor, "notify_delivery") if not p.default)
        cursor.execute(f"SELECT count(*) FROM {oldest.name}")
        day_rows = cursor.fetchone()[0]
    t = time.perf_counter()
    dropped, events, notifications = partitions.drop_delivery_partition(oldest)
    dropped_at = time.perf_counter() - t
    log_partition = partitions.day_name("notify_deliverylog", oldest.lower.date())
    t = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {log_partition}")
    log_dropped = time.perf_counter() - t
    assert dropped
    use("flat")
    t = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM notify_delivery WHERE created_at < %s", [oldest.upper])
        assert cursor.rowcount == day_rows
        cursor.execute("DELETE FROM notify_deliverylog WHERE at < %s", [oldest.upper])
    deleted = time.perf_counter() - t
    print(f"\ncreate a day partition (both tables, {many} partitions): {created * 1000:.0f} ms")
    print(f"retention of the oldest day ({day_rows:,} deliveries, their log rows): partitioned: DROP + "
          f"{events:,} events + {notifications:,} notifications deleted {dropped_at:.2f} s, log partition DROP "
          f"{log_dropped * 1000:.0f} ms; unpartitioned: DELETE of the deliveries and log rows {deleted:.2f} s "
          f"(and the dead rows left to vacuum)")
    print(f"\nwhole run {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()

"""Analytics benchmark: the rollup over a million deliveries, then the API's reads.

Fills the benchmark database (``NOTIFY_DB_NAME``, default ``notify_bench``) with 1,000,000
deliveries of 500,000 notifications over the last 30 days (generate_series, in SQL), with their
delivery-log rows and a realistic share of delivery events; times the first rollup over all of
it, an incremental one over 10,000 new deliveries, and one with nothing new; then times
``GET /api/v1/analytics`` (in process, through DRF and the API-key authentication) per day over
30 days, per variant of one template version, per channel, and the full grouping as CSV, next to
the same numbers counted straight from the delivery tables.

    NOTIFY_DB_NAME=notify_bench_c .venv/bin/python bench/analytics.py [--deliveries 1000000]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import statistics
import time

from _setup import setup_django

#: Share of deliveries by what happened to them (the rest: sent at the first attempt).
OUTCOMES = [("suppressed", 0.02), ("queued", 0.01), ("failed", 0.03), ("replayed", 0.005), ("retried", 0.05)]
#: Which sent deliveries get each event, by their random ``ev`` in [0, 1): 85 % delivered; of the
#: emails 25 % opened, 5 % clicked (among the opens), 1 % bounced, 0.3 % unsubscribed and 0.05 %
#: complained (among the opens).
EVENTS = {"delivered": "ev < 0.85", "opened": "ev < 0.25 AND channel = 'email'",
          "clicked": "ev < 0.05 AND channel = 'email'", "bounced": "ev >= 0.99 AND channel = 'email'",
          "unsubscribed": "ev >= 0.2 AND ev < 0.203 AND channel = 'email'",
          "complained": "ev >= 0.1 AND ev < 0.1005 AND channel = 'email'"}
CHANNELS = ["email", "sms", "fcm", "apns", "webpush"]
TEMPLATES = 5


def fill(cursor, app_id: int, templates: list[int], deliveries: int, offset: int, since: str, until: str) -> None:
    """Insert ``deliveries`` deliveries (two per notification) created between ``since`` and
    ``until`` (SQL intervals before now()), numbered from ``offset``, with their log rows (within
    9 s of the accept) and events (10 s after it)."""
    notifications = deliveries // 2
    cursor.execute("DROP TABLE IF EXISTS bench_plan")
    cursor.execute(f"""
        CREATE TEMP TABLE bench_plan AS
        SELECT md5('d' || n || '-' || k)::uuid AS id, md5('n' || n)::uuid AS notification_id, n, k,
               (ARRAY{CHANNELS!r})[1 + (n + k) % {len(CHANNELS)}] AS channel,
               now() - {since} + random() * ({since} - {until}) AS created_at,
               random() AS fate, random() AS ev
        FROM generate_series({offset}, {offset + notifications - 1}) n, generate_series(0, 1) k""")
    # Both deliveries of a notification share its accept time.
    cursor.execute("""UPDATE bench_plan p SET created_at = f.created_at FROM bench_plan f
                      WHERE f.n = p.n AND f.k = 0 AND p.k = 1""")
    bounds, start = [], 0.0
    for name, share in OUTCOMES:
        bounds.append(f"WHEN fate < {start + share} THEN '{name}'")
        start += share
    cursor.execute("ALTER TABLE bench_plan ADD COLUMN outcome text")
    cursor.execute(f"UPDATE bench_plan SET outcome = CASE {' '.join(bounds)} ELSE 'sent' END")
    templates_sql = f"(ARRAY{templates!r}::bigint[])"
    cursor.execute(f"""
        INSERT INTO notify_notification (id, app_id, recipient_id, request_hash, category, template_id,
            template_version, locale, data, content, priority, ttl, expires_at, response, fallback, created_at)
        SELECT notification_id, {app_id}, (SELECT min(id) FROM notify_recipient) + n % 10000, md5(n::text),
               'general', {templates_sql}[1 + n % {len(templates)}], 1 + n % 2, 'en', '{{}}', '{{}}', 'normal',
               86400, created_at + interval '1 day', '{{}}', '[]', created_at
        FROM bench_plan WHERE k = 0 ORDER BY created_at""")
    cursor.execute("""
        INSERT INTO notify_delivery (id, notification_id, channel, provider, variant, step, address, status, reason,
            attempts, provider_message_id, created_at, updated_at, unknown_outcome)
        SELECT id, notification_id, channel, '', CASE WHEN n % 2 = 0 THEN '' WHEN n % 4 = 1 THEN 'a' ELSE 'b' END,
               0, 'x', CASE outcome WHEN 'failed' THEN 'failed' WHEN 'suppressed' THEN 'suppressed'
                                    WHEN 'queued' THEN 'queued' ELSE 'sent' END,
               '', 1, '', created_at, created_at, false
        FROM bench_plan ORDER BY created_at""")
    steps = {
        "failed": ["queued>sending", "sending>failed"],
        "sent": ["queued>sending", "sending>sent"],
        "retried": ["queued>sending", "sending>retrying", "retrying>queued", "queued>sending", "sending>sent"],
        "replayed": ["queued>sending", "sending>dead_lettered", "dead_lettered>queued", "queued>sending",
                     "sending>sent"],
    }
    values = ", ".join(f"('{outcome}', {i}, '{move.split('>')[0]}', '{move.split('>')[1]}')"
                       for outcome, moves in steps.items() for i, move in enumerate(moves))
    # In time order, as a running system appends them.
    cursor.execute(f"""
        INSERT INTO notify_deliverylog (delivery_id, at, from_status, to_status, attempt, reason)
        SELECT p.id, p.created_at + make_interval(secs => 1 + s.i * 2) AS at, s.f, s.t, 1, ''
        FROM bench_plan p JOIN (VALUES {values}) AS s(outcome, i, f, t) ON s.outcome = p.outcome
        ORDER BY at""")
    kinds = " UNION ALL ".join(f"SELECT id, '{kind}' AS kind, created_at FROM bench_plan "
                               f"WHERE outcome IN ('sent', 'retried', 'replayed') AND {condition}"
                               for kind, condition in EVENTS.items())
    cursor.execute(f"""
        INSERT INTO notify_deliveryevent (delivery_id, kind, occurred_at, received_at, reason)
        SELECT id, kind, created_at + interval '10 seconds', created_at + interval '10 seconds', ''
        FROM ({kinds}) e ORDER BY created_at""")
    cursor.execute("DROP TABLE bench_plan")


def timed(fn, runs: int) -> tuple[float, float]:
    """Median and p95 of ``runs`` calls of ``fn``, in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    setup_django("bench-analytics")
    # The rollup's INFO line per run would bury the figures this prints.
    logging.getLogger("notify.analytics").setLevel(logging.WARNING)

    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIClient

    from devtools import demo
    from notify import analytics
    from notify.models import Template, TemplateVersion

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE notify_dailystat, notify_analyticswatermark, notify_deliveryevent, notify_deliverylog, "
                       "notify_delivery, notify_notification, notify_preference, notify_device, notify_recipient, "
                       "notify_template, notify_appapikey, notify_app CASCADE")
    app, key = demo.create_app("bench-analytics")
    templates = []
    for t in range(TEMPLATES):
        template = Template.objects.create(app=app, name=f"campaign-{t}", default_locale="en")
        content = {"en": {"email": {"subject": "s", "text": "t"}}}
        TemplateVersion.objects.create(template=template, number=1, content=content, published_at=timezone.now())
        TemplateVersion.objects.create(template=template, number=2, content=content, published_at=timezone.now(),
                                       variants=[{"name": "a", "weight": 1, "content": content},
                                                 {"name": "b", "weight": 1, "content": content}])
        templates.append(template.id)

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"""
            INSERT INTO notify_recipient (app_id, external_id, name, locale, timezone, email, phone, muted, quiet_hours,
                                          created_at, updated_at)
            SELECT {app.id}, 'r' || i, '', 'en', 'UTC', 'r' || i || '@example.com', '', false, '', now(), now()
            FROM generate_series(1, 10000) i""")
        fill(cursor, app.id, templates, args.deliveries, 0, "interval '29 days'", "interval '2 minutes'")
        cursor.execute("ANALYZE")
        cursor.execute("SELECT (SELECT count(*) FROM notify_delivery), (SELECT count(*) FROM notify_deliverylog), "
                       "(SELECT count(*) FROM notify_deliveryevent)")
        deliveries, log_rows, events = cursor.fetchone()
    print(f"filled {deliveries:,} deliveries, {log_rows:,} log rows, {events:,} events "
          f"in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    full = analytics.rollup(lag=0)
    print(f"rollup, first (everything):  {(time.perf_counter() - started) * 1000:9.1f} ms  "
          f"{full.rows:,} rows into {full.counts:,} daily counts")
    # New rows are stamped after the watermark and at least 10 s ago (their log rows and events
    # follow within 10 s), as a running system's would be.
    time.sleep(12)
    with connection.cursor() as cursor:
        fill(cursor, app.id, templates, 10_000, args.deliveries, "interval '11.5 seconds'", "interval '10.5 seconds'")
    started = time.perf_counter()
    more = analytics.rollup(lag=0)
    print(f"rollup, 10,000 new deliveries: {(time.perf_counter() - started) * 1000:7.1f} ms  "
          f"{more.rows:,} rows into {more.counts:,} daily counts")
    median, p95 = timed(lambda: analytics.rollup(lag=0), args.runs)
    print(f"rollup, nothing new:           median {median:6.2f} ms  p95 {p95:6.2f} ms")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM notify_dailystat")
        print(f"notify_dailystat: {cursor.fetchone()[0]:,} rows")

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    queries = [
        ("per day, 30 days", {"group_by": "day"}, None),
        ("per day and channel, 30 days", {"group_by": "day,channel"}, None),
        ("per variant of one version", {"template": "campaign-1", "version": "2", "group_by": "variant"}, None),
        ("per channel", {"group_by": "channel"}, None),
        ("every group, CSV", {"group_by": "day,template,version,variant,channel", "format": "csv"}, "text/csv"),
    ]
    print(f"GET /api/v1/analytics ({args.runs} runs each, in process, API-key authentication included):")
    for name, params, kind in queries:
        response = client.get("/api/v1/analytics", params)
        assert response.status_code == 200, response.content[:500]
        rows = len(response.content.splitlines()) - 1 if kind else len(response.json()["rows"])
        median, p95 = timed(lambda: client.get("/api/v1/analytics", params), args.runs)
        print(f"  {name:32} median {median:6.2f} ms  p95 {p95:6.2f} ms  ({rows} rows)")
    today = datetime.datetime.now(datetime.timezone.utc).date()
    first = today - datetime.timedelta(days=29)
    median, p95 = timed(lambda: analytics.report(app.id, first, today, ("day",)), args.runs)
    print(f"  (the read alone, per day for 30 days, notify.analytics.report: median {median:.2f} ms  p95 {p95:.2f} ms)")
    totals = client.get("/api/v1/analytics", {"group_by": "channel"}).json()["totals"]["counts"]

    # The same numbers counted from the delivery tables, for scale (what every request would cost
    # without the daily counts).
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute("""SELECT d.channel, count(*) FROM notify_deliverylog l JOIN notify_delivery d ON d.id = l.delivery_id
                          WHERE l.to_status = 'sent' GROUP BY d.channel""")
        direct_sent = sum(n for _, n in cursor.fetchall())
        sent_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        cursor.execute("""SELECT d.channel, count(*) FROM notify_deliveryevent e JOIN notify_delivery d ON d.id = e.delivery_id
                          WHERE e.kind = 'opened' GROUP BY d.channel""")
        direct_opened = sum(n for _, n in cursor.fetchall())
        opened_ms = (time.perf_counter() - started) * 1000
    print(f"counted from the delivery tables instead: sent per channel {sent_ms:.0f} ms, opened per channel "
          f"{opened_ms:.0f} ms")
    assert (totals["sent"], totals["opened"]) == (direct_sent, direct_opened), (totals, direct_sent, direct_opened)
    print(f"totals agree with the delivery tables: sent {direct_sent:,}, opened {direct_opened:,}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Broadcast fan-out: recipients/s from ``POST /api/v1/broadcasts`` until every delivery is
written and queued (target ≥ 20,000/s).

    python bench/broadcast.py [--recipients 100000] [--batch 5000] [--lanes 2] [--port PORT]

Each recipient has an email address, a phone number and an iPhone (three deliveries each),
created with INSERT … SELECT generate_series. The real API (gunicorn), the maintenance worker
(the fan-out tasks, one at a time, each batch in ``--lanes`` id ranges written at once, and beat)
and the outbox relay run; no channel worker does, so the figure is the fan-out's alone. Two
instants are reported: every recipient's notification and deliveries written (the broadcast
``done``), and every delivery published to RabbitMQ by the relay; then the CPU each part of the
stack used until the first (bench/cpu.py).

It runs on its own database, ``NOTIFY_DB_NAME`` (default ``notify_bench_broadcast``, created if
missing), vhost and Redis database (bench/_setup.py).
"""

from __future__ import annotations

import argparse
import os
import time

import cpu
from _setup import post_json, reset_data, setup_django, stack_config


def create_recipients(count: int) -> str:
    """The bench app with ``count`` recipients (email, phone, an iPhone each); returns its API key."""
    from django.db import connection

    from devtools import demo

    app, key = demo.create_app("bench")
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO notify_recipient (app_id, external_id, name, locale, timezone, email, phone, quiet_hours,
                                          muted, tags, created_at, updated_at)
            SELECT %(app)s, 'b-' || i, '', 'ko-KR', 'Asia/Seoul', 'user' || i || '@example.com',
                   '+8210' || (10000000 + i), 'none', false, ARRAY['bench'], now(), now()
            FROM generate_series(1, %(n)s) i""", {"app": app.id, "n": count})
        cursor.execute("""
            INSERT INTO notify_device (app_id, recipient_id, platform, token, active, deactivated_reason,
                                       last_seen_at, created_at)
            SELECT %(app)s, id, 'ios', md5(id::text) || md5('x' || id::text), true, '', now(), now()
            FROM notify_recipient WHERE app_id = %(app)s""", {"app": app.id})
        cursor.execute("ANALYZE notify_recipient; ANALYZE notify_device")
    return key



def scalar(sql: str, params: list) -> object:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000, help="NOTIFY_BROADCAST_BATCH for the worker")
    parser.add_argument("--lanes", type=int, default=2, help="NOTIFY_BROADCAST_LANES for the worker")
    parser.add_argument("--port", type=int, default=None,
                        help="the API's port (default NOTIFY_TEST_API_PORT, else 18100)")
    args = parser.parse_args()

    os.environ.setdefault("NOTIFY_DB_NAME", "notify_bench_broadcast")  # its own: a reset there spares the others
    os.environ["NOTIFY_BROADCAST_BATCH"] = str(args.batch)
    setup_django("bench")
    reset_data()
    key = create_recipients(args.recipients)
    from devtools.stack import Stack
    from notify.metrics import outbox_backlog

    config = stack_config("bench")
    if args.port is not None:
        config.api_port = args.port
    config.env["NOTIFY_BROADCAST_BATCH"] = str(args.batch)
    config.env["NOTIFY_BROADCAST_LANES"] = str(args.lanes)
    stack = Stack(config)
    try:
        stack.start_api()
        stack.start_relay()
        stack.start_maintenance()
        cpu_before = cpu.snapshot(stack)
        started = time.perf_counter()
        status, answer = post_json(f"{stack.api_url}/api/v1/broadcasts", key, {
            "template": "order-shipped", "data": {"name": "고객", "order": "SALE-1"}, "segment": {"all": True}})
        accepted = time.perf_counter() - started
        if status != 202:
            raise SystemExit(f"{status} {answer}")
        written = published = None
        while published is None:
            now = time.perf_counter() - started
            if now > 600:
                raise SystemExit("not finished within 600 s")
            if written is None and scalar("SELECT status FROM notify_broadcast WHERE id = %s",
                                          [answer["id"]]) == "done":
                written = now
                cpu_written = cpu.snapshot(stack)
            # Published: no delivery waits in the outbox, as itself or in a batch row.
            if written is not None and not outbox_backlog():
                published = time.perf_counter() - started
            time.sleep(0.05)
        deliveries = scalar("SELECT queued FROM notify_broadcast WHERE id = %s", [answer["id"]])
    finally:
        stack.stop()

    print(f"broadcast fan-out: {args.recipients} recipients, {deliveries} deliveries (email, sms, apns each), "
          f"batch {args.batch}, {args.lanes} lanes")
    print(f"  202 answered after     {accepted:8.2f} s")
    print(f"  all written + queued   {written:8.2f} s  {args.recipients / written:>10,.0f} recipients/s")
    print(f"  all published (relay)  {published:8.2f} s  {args.recipients / published:>10,.0f} recipients/s")
    print("CPU until all written (the relay publishing meanwhile):")
    print(cpu.report(cpu_before, cpu_written, args.recipients, "recipient"))


if __name__ == "__main__":
    main()

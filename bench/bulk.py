#!/usr/bin/env python
"""Bulk accept: recipients/s accepted by ``POST /api/v1/notifications/bulk`` for calls of
10,000 recipients through the real API (gunicorn, as bench/accept.py starts it).

    python bench/bulk.py [--recipients 10000] [--calls 3] [--port 18100] [--compare-copy]

Each recipient has a phone, an email address, an iPhone and an Android phone, so every item
writes a notification and four deliveries (40,000 delivery rows per call). Every call carries
new ``event_id`` values (new notifications, not replays). The first call finds no profile in
Redis (every recipient read from PostgreSQL in four queries), the later ones find them all. No
relay or worker runs: the deliveries stay in the outbox, as in bench/accept.py.

It runs on its own database, ``NOTIFY_DB_NAME`` (default ``notify_bench_bulk``, created if
missing). ``--compare-copy`` also times, in process, the write of one call's rows by the accept
path's multi-row insert (notify.store.insert_notifications) against COPY into the same tables
(each in a transaction rolled back), which is how the insert was chosen.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import time

from _setup import post_json, reset_data, setup_django, stack_config


def create_recipients(count: int) -> str:
    """The bench app with ``count`` recipients on four channels each; returns its API key."""
    from devtools import demo
    from notify.models import Device, Recipient

    app, key = demo.create_app("bench")
    recipients = Recipient.objects.bulk_create([
        Recipient(app=app, external_id=f"bulk-{i}", name="사용자", email=f"user{i}@example.com",
                  phone=f"+8210{10000000 + i}") for i in range(count)])
    Device.objects.bulk_create(
        [Device(app=app, recipient=r, platform="ios", token=secrets.token_hex(32)) for r in recipients]
        + [Device(app=app, recipient=r, platform="android", token=demo.fcm_token()) for r in recipients])
    return key



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=3, help="calls measured (the first with a cold cache)")
    parser.add_argument("--port", type=int, default=18100, help="the API's port")
    parser.add_argument("--compare-copy", action="store_true",
                        help="also time the write of one call's rows by the multi-row insert and by COPY")
    args = parser.parse_args()

    os.environ.setdefault("NOTIFY_DB_NAME", "notify_bench_bulk")  # its own: a reset there spares the others
    setup_django("bench")
    reset_data()
    key = create_recipients(args.recipients)
    from devtools.stack import Stack

    config = stack_config("bench")
    config.api_port = args.port
    stack = Stack(config)
    rows = []
    try:
        stack.start_api()
        url = f"{stack.api_url}/api/v1/notifications/bulk"
        for call in range(args.calls):
            run = secrets.token_hex(4)
            body = json.dumps({"template": "order-shipped", "recipients": [
                {"recipient": f"bulk-{i}", "data": {"name": f"사용자{i}", "order": f"A-{i}"},
                 "event_id": f"{run}-{i}"} for i in range(args.recipients)]}).encode()
            started = time.perf_counter()
            status, answer = post_json(url, key, body)
            elapsed = time.perf_counter() - started
            if status != 202 or len(answer["accepted"]) != args.recipients:
                raise SystemExit(f"call {call}: {status} {str(answer)[:500]}")
            rows.append((call, len(body), elapsed))
    finally:
        stack.stop()

    print(f"bulk accept: {args.recipients} recipients per call, 4 deliveries each (a notification and 4 "
          f"deliveries written per recipient)")
    print(f"{'call':<6}{'cache':<7}{'body KB':>9}{'seconds':>9}{'recipients/s':>14}")
    for call, size, elapsed in rows:
        print(f"{call:<6}{'cold' if call == 0 else 'warm':<7}{size / 1024:>9.0f}{elapsed:>9.2f}"
              f"{args.recipients / elapsed:>14.0f}")
    if args.compare_copy:
        compare_copy(args.recipients)


def _copy_rows(notifications, deliveries) -> None:
    """The rows of notify.store.insert_notifications written with two COPYs instead (no log
    rows or relay wake-up: those would be a third and fourth statement)."""
    from django.db import connection
    from psycopg.types.json import Jsonb

    now = dt.datetime.now(dt.timezone.utc)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no copy()
        with raw.copy("COPY notify_notification (id, app_id, api_key_id, recipient_id, idempotency_key, "
                      "request_hash, category, template_id, template_version, locale, data, content, priority, "
                      "ttl, expires_at, response, send_at, fallback, created_at) FROM STDIN") as copy:
            for n in notifications:
                copy.write_row((n.id, n.app_id, n.api_key_id, n.recipient_id, n.idempotency_key, n.request_hash,
                                n.category, n.template_id, n.template_version, n.locale, Jsonb(n.data),
                                Jsonb(n.content), n.priority, n.ttl, n.expires_at, Jsonb(n.response), n.send_at,
                                Jsonb(n.fallback), now))
        with raw.copy("COPY notify_delivery (id, notification_id, channel, provider, variant, step, device_id, "
                      "address, status, reason, attempts, provider_message_id, created_at, updated_at, "
                      "next_attempt_at, unknown_outcome) FROM STDIN") as copy:
            for d in deliveries:
                copy.write_row((d.id, d.notification_id, d.channel, "", d.variant, d.step, d.device_id, d.address,
                                d.status, d.reason, 0, "", now, now, d.due or now, False))


def compare_copy(count: int, rounds: int = 3) -> None:
    """Print the best of ``rounds`` timings of writing one call's rows each way (rolled back)."""
    from django.db import transaction

    from notify import accept, cache, store
    from notify.models import App

    app = App.objects.get(name="bench")
    context = cache.load_bulk_send_context(app.id, [f"bulk-{i}" for i in range(count)], "order-shipped")
    planned = [accept.plan(app.id, None, {"recipient": f"bulk-{i}", "template": "order-shipped",
                                          "data": {"name": f"N{i}", "order": f"A-{i}"}}, f"copy-{i}", None, None,
                           cache.SendContext(context.profiles[f"bulk-{i}"], context.template, context.categories))
               for i in range(count)]
    notifications = [p.notification for p in planned]
    deliveries = [d for p in planned for d in p.deliveries]
    ways = {"multi-row insert (jsonb_to_recordset)": lambda: store.insert_notifications(notifications, deliveries),
            "COPY x2": lambda: _copy_rows(notifications, deliveries)}
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(rounds):
        for name, write in ways.items():
            with transaction.atomic():
                started = time.perf_counter()
                write()
                best[name] = min(best[name], time.perf_counter() - started)
                transaction.set_rollback(True)
    print(f"write of {len(notifications)} notifications + {len(deliveries)} deliveries, best of {rounds}:")
    for name, seconds in best.items():
        print(f"  {name:<32}{seconds:>7.2f} s")


if __name__ == "__main__":
    main()

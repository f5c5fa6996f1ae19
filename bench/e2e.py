#!/usr/bin/env python
"""End-to-end throughput: notifications through the HTTP API to every channel's provider sandbox,
next to two references measured in the same run on the same broker, sandbox and machine:
(a) a no-op Celery task's rate (target: notify ≥ 0.9 × it) and (b) a plain Celery pipeline, one
task per message calling the provider clients directly (bench/plain_pipeline.py; target: notify
≥ 2 × it).

    python bench/e2e.py [--notifications 2000] [--warmup 100] [--concurrency 2] [--batch 1] [--rate 0]
                        [--no-receipts] [--no-plain] [--plain-messages N]

Prints deliveries/s end to end (first POST → last delivery final), the API's accept rate, the
latency from accept to provider-accepted (p50/p95), and the no-op task rate. Everything runs on
127.0.0.1 and stops by itself.

Without ``--rate`` the clients send as fast as the API accepts (throughput: a backlog builds,
so latency there is mostly queueing). ``--rate N`` paces the clients to N deliveries per second
(latency at a given load, e.g. the 185/s daily mean).

``--no-receipts`` leaves the providers' status callbacks out (Twilio's ``sent`` and ``delivered``
for each SMS, POSTed to the API and written there): the workers advertise a callback host the
sandbox never calls. For comparing the send path with runs from before receipts existed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import secrets
import statistics
import time

import cpu
import plain_pipeline
from _setup import populate, reset_data, setup_django, stack_config, wait_final


def noop_rate(stack, count: int, processes: int) -> float:
    """Publish ``count`` no-op tasks to their own queue, consumed by one pool of ``processes``."""
    from django_redis import get_redis_connection

    from notify.celery import app

    from devtools.stack import CELERY

    stack._spawn("worker-noop", [CELERY, "-A", "notify", "worker",
                                 "-Q", "bench_noop", "-n", "noop@%h", "-c", str(processes), "--prefetch-multiplier", "1",
                                 "-O", "fair", "--without-gossip", "--without-mingle", "-l", "WARNING"])
    redis = get_redis_connection("default")
    key = f"bench:noop:{secrets.token_hex(4)}"
    # Warm-up: wait until the pool consumes one.
    app.send_task("notify.maintenance.noop", args=[key], queue="bench_noop")
    deadline = time.monotonic() + 60
    while int(redis.get(key) or 0) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("no-op worker did not start")
        time.sleep(0.1)
    start = time.monotonic()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("notify.maintenance.noop", args=[key], queue="bench_noop", producer=producer)
    while int(redis.get(key) or 0) < count + 1:
        if time.monotonic() - start > 300:
            raise RuntimeError("no-op tasks did not finish in 300 s")
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    stack._stop("worker-noop")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100,
                        help="notifications sent (and finished) before the measurement: connections, caches and "
                             "prepared statements warm, as in a service that has been running")
    parser.add_argument("--recipients", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16, help="concurrent API callers (at most this many calls in flight)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes per channel")
    parser.add_argument("--noop-tasks", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1,
                        help="notifications per API call (1: POST /notifications; more: /notifications/batch)")
    parser.add_argument("--rate", type=float, default=0,
                        help="offered load in deliveries/s (0: as fast as the API accepts)")
    parser.add_argument("--no-receipts", action="store_true",
                        help="no provider status callbacks to the API (the sandbox does not call them)")
    parser.add_argument("--no-plain", action="store_true",
                        help="leave out reference (b), the plain Celery pipeline (bench/plain_pipeline.py)")
    parser.add_argument("--plain-messages", type=int, default=0,
                        help="messages per channel for the plain pipeline (default: --notifications)")
    args = parser.parse_args()

    setup_django("bench")
    reset_data()
    from devtools import demo
    from notify.models import FINAL_STATUSES, REACHED_PROVIDER, Delivery
    from devtools.stack import Stack

    config = stack_config("bench", concurrency=args.concurrency, receipts=not args.no_receipts)
    stack = Stack(config).start()
    try:
        key, addresses = populate(stack, "bench", args.recipients)

        def item(i: int, prefix: str = "bench") -> dict:
            return {"recipient": f"bench-{i % args.recipients}", "template": "order-shipped",
                    "data": {"name": "지우", "order": f"B-{i}"}, "event_id": f"{prefix}-{i}"}

        def warm(i: int) -> None:
            status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", item(i, "warmup"))
            assert status == 202, body

        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(warm, range(args.warmup)))
        wait_final(300, "warm-up deliveries")
        measured = Delivery.objects.filter(notification__idempotency_key__startswith="bench-")

        deliveries_per_notification = 5
        interval = args.batch * deliveries_per_notification / args.rate if args.rate else 0.0

        def send(first: int) -> int:
            if interval:
                # Open loop: call i leaves at start + i * interval whatever the earlier ones do.
                delay = start + (first // args.batch) * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if args.batch == 1:
                status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", item(first))
                assert status == 202, body
                return len(body["deliveries"])
            items = [item(i) for i in range(first, min(first + args.batch, args.notifications))]
            status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications/batch", {"notifications": items})
            assert status == 202, body
            return sum(len(n["deliveries"]) for n in body["notifications"])

        cpu_before = cpu.snapshot(stack)
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            total = sum(pool.map(send, range(0, args.notifications, args.batch)))
        accepted_at = time.monotonic()
        wait_final(600)
        elapsed = time.monotonic() - start
        cpu_after = cpu.snapshot(stack)
        rows = list(measured.filter(status__in=REACHED_PROVIDER).values_list("created_at", "sent_at"))
        latencies = sorted((s - c).total_seconds() * 1000 for c, s in rows)
        statuses = {s: measured.filter(status=s).count() for s in sorted(FINAL_STATUSES)}
        e2e = total / elapsed
        noop = noop_rate(stack, args.noop_tasks, processes=args.concurrency * 5)
        plain = None
        if not args.no_plain:
            from django.conf import settings

            plain = plain_pipeline.measure(stack, addresses, args.plain_messages or args.notifications,
                                           args.concurrency, settings.REDIS_URL, settings.NOTIFY_BROKER_URL)
    finally:
        stack.stop()

    mode = "single sends" if args.batch == 1 else f"batches of {args.batch}"
    if args.no_receipts:
        mode += ", no status callbacks"
    if args.rate:
        mode += f", paced to {args.rate:.0f} deliveries/s"
    print(f"notifications           {args.notifications} ({total} deliveries, 5 channels, {args.clients} API clients, {mode}; "
          f"after {args.warmup} warm-up notifications)")
    print(f"statuses                {statuses}")
    print(f"API accept rate         {args.notifications / (accepted_at - start):8.1f} notifications/s")
    print(f"end-to-end              {e2e:8.1f} deliveries/s  ({elapsed:.2f} s)")
    print(f"accept→sent latency     p50 {statistics.median(latencies):.0f} ms, p95 {latencies[int(len(latencies) * 0.95) - 1]:.0f} ms")
    print(f"no-op Celery task       {noop:8.1f} tasks/s  ({args.noop_tasks} tasks, {args.concurrency * 5} processes)")
    print(f"ratio e2e / no-op       {e2e / noop:8.2f}   (target >= 0.9)  -> {'OK' if e2e / noop >= 0.9 else 'BELOW'}")
    if plain:
        print(f"plain Celery pipeline   {plain['rate']:8.1f} deliveries/s  ({plain['deliveries']} deliveries, "
              f"{args.concurrency} processes per channel, {plain['errors']} errors; one task per message, "
              f"provider clients called directly, no receipts)")
        print(f"ratio e2e / plain       {e2e / plain['rate']:8.2f}   (target >= 2)    -> "
              f"{'OK' if e2e / plain['rate'] >= 2 else 'BELOW'}")
    print(f"CPU per component during the end-to-end phase (2 cores = {2 * elapsed:.1f} CPU-s available):")
    print(cpu.report(cpu_before, cpu_after, total, "delivery"))
    if args.rate:
        drain = elapsed - (accepted_at - start)
        print(f"kept up with the load?  every delivery final {drain:.2f} s after the last accept "
              f"-> {'yes' if drain < 5 else 'NO (a backlog built up)'}")
    else:
        print(f"target (daily mean)        185.0 deliveries/s -> {'OK' if e2e >= 185 else 'BELOW'}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""A compressed day (issue 14, benchmark 5): 1/100 of the daily volume — 100,000 pushes, 10,000
SMS and 50,000 emails — sent through the API as a mix of single sends, bulk calls and
broadcasts at once, then checked delivery by delivery against what the provider sandbox
received: zero lost, zero duplicated. Prints the wall time, each channel's throughput and the
resident memory of every process afterwards (benchmark 6).

    python bench/day.py [--scale 1.0] [--concurrency 2] [--clients 16]

``--scale 0.1`` is a tenth of that (a quick check). With R = 5,000 × scale recipients, each with
an iPhone, an Android phone, a browser, a phone number and an email address:

========== =========================================== ============== ===========
channel    broadcasts (segment ``all``)                bulk calls     single sends
========== =========================================== ============== ===========
push       4 × R × 3 (APNs, FCM, Web Push) = 60 %       2 × R × 3     2 × R (one channel each)
email      4 × R (the same broadcasts)                  5 × R         R
SMS        —                                            R             R
========== =========================================== ============== ===========

The checker reads the sandbox's own record files (``<sandbox dir>/records/<provider>.jsonl``,
one line per request a provider port received) from where they ended before the run: every
delivery the database calls sent must have exactly one accepted record with its id (lost: none;
duplicated: more than one), and no accepted record may name a delivery of no notification.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import secrets
import sys
import time
from collections import Counter
from pathlib import Path

import memory
from _setup import post_json, reset_data, setup_django, stack_config, wait_final

PUSH = ("apns", "fcm", "webpush")
TEMPLATE = "order-shipped"


def create_recipients(app, count: int, control_url: str) -> list[str]:
    """``count`` recipients of ``app`` (``day-<i>``) on five channels, written with bulk inserts;
    each Web Push subscription is made by the sandbox's push service. Returns their external ids."""
    from devtools import demo
    from notify.models import Device, Recipient

    recipients = Recipient.objects.bulk_create([
        Recipient(app=app, external_id=f"day-{i}", name="사용자", email=f"day{i}@example.com",
                  phone=f"+8210{20000000 + i}") for i in range(count)])
    devices = []
    for recipient in recipients:
        subscription = demo.sandbox_subscription(control_url)
        devices += [Device(app=app, recipient=recipient, platform="ios", token=secrets.token_hex(32)),
                    Device(app=app, recipient=recipient, platform="android", token=demo.fcm_token()),
                    Device(app=app, recipient=recipient, platform="web", token=subscription["endpoint"],
                           subscription=subscription)]
    Device.objects.bulk_create(devices, batch_size=5000)
    return [r.external_id for r in recipients]


def record_offsets(directory: Path) -> dict[Path, int]:
    """Where each provider's record file ends now (bytes)."""
    return {path: path.stat().st_size for path in directory.glob("*.jsonl")}


def accepted_records(directory: Path, offsets: dict[Path, int]) -> Counter:
    """Accepted records per delivery id written after ``offsets``."""
    counts: Counter = Counter()
    for path in directory.glob("*.jsonl"):
        with path.open("rb") as f:
            f.seek(offsets.get(path, 0))
            for line in f:
                record = json.loads(line)
                if record.get("accepted") and record.get("delivery_id"):
                    counts[record["delivery_id"]] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 1/100 of the daily volume")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes per channel")
    parser.add_argument("--clients", type=int, default=16, help="concurrent callers of the single-send API")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for every delivery")
    args = parser.parse_args()

    setup_django("bench")
    reset_data()
    from django.db.models import Max, Min

    from devtools import demo
    from devtools.stack import Stack
    from notify.models import Delivery

    config = stack_config("bench", concurrency=args.concurrency)
    stack = Stack(config).start()
    try:
        app, key = demo.create_app("day")
        count = max(int(5000 * args.scale), 10)
        users = create_recipients(app, count, stack.control_url)
        run = secrets.token_hex(3)
        data = {"name": "지우", "order": f"D-{run}"}
        records_dir = config.sandbox_dir / "records"
        time.sleep(1)  # the sandbox flushes its record files every 200 ms
        offsets = record_offsets(records_dir)

        def call(path: str, body: dict) -> dict:
            # A bulk call of 5,000 recipients can take its time on a machine that runs the whole day.
            status, answer = post_json(stack.api_url + path, key, body, timeout=600)
            assert status in (200, 202), (path, status, answer)
            return answer

        def broadcast(n: int) -> None:
            call("/api/v1/broadcasts", {"template": TEMPLATE, "data": data, "channels": [*PUSH, "email"],
                                                 "segment": {"all": True}})

        def bulk(name: str, channels: tuple[str, ...]) -> None:
            limit = 10_000
            for first in range(0, count, limit):
                call("/api/v1/notifications/bulk", {
                    "template": TEMPLATE, "channels": list(channels),
                    "recipients": [{"recipient": user, "data": {**data, "order": f"{name}-{i}"},
                                    "event_id": f"{run}-{name}-{i}"}
                                   for i, user in enumerate(users[first:first + limit], first)]})

        singles = ([(f"push{i}", (PUSH[i % 3],)) for i in range(2 * count)]
                   + [(f"email{i}", ("email",)) for i in range(count)]
                   + [(f"sms{i}", ("sms",)) for i in range(count)])
        random.Random(7).shuffle(singles)  # the channels interleaved, as in a day

        def single(item: tuple[int, tuple[str, tuple[str, ...]]]) -> None:
            i, (name, channels) = item
            call("/api/v1/notifications", {"recipient": users[i % count], "template": TEMPLATE,
                                                    "data": data, "channels": list(channels),
                                                    "event_id": f"{run}-{name}"})

        bulks = [(f"bulk-push-{n}", PUSH) for n in range(2)] + [(f"bulk-email-{n}", ("email",)) for n in range(5)] \
            + [("bulk-sms", ("sms",))]
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.clients + 2) as pool:
            jobs = [pool.submit(broadcast, n) for n in range(4)]
            jobs.append(pool.submit(lambda: [bulk(name, channels) for name, channels in bulks]))
            jobs += [pool.submit(single, item) for item in enumerate(singles)]
            for job in jobs:
                job.result()
        called = time.monotonic() - start
        expected = {"apns": 0, "fcm": 0, "webpush": 0, "sms": 2 * count, "email": 4 * count + 5 * count + count}
        for channel in PUSH:
            expected[channel] = 4 * count + 2 * count + sum(1 for _, c in singles if c == (channel,))
        # Broadcasts fan out in the background: wait until every expected delivery is written.
        deadline = time.monotonic() + args.timeout
        while Delivery.objects.count() < sum(expected.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the broadcasts did not write every delivery")
            time.sleep(0.5)
        wait_final(max(deadline - time.monotonic(), 1), "the day's deliveries")
        elapsed = time.monotonic() - start
        rss = memory.snapshot(stack)
        time.sleep(1)
        received = accepted_records(records_dir, offsets)
        rows = list(Delivery.objects.values_list("id", "channel", "status"))
        spans = {row["channel"]: row for row in Delivery.objects.values("channel").annotate(
            first=Min("created_at"), last=Max("sent_at"))}
    finally:
        stack.stop()

    ids = {str(i) for i, _, _ in rows}
    statuses = Counter((channel, status) for _, channel, status in rows)
    by_channel = Counter(channel for _, channel, _ in rows)
    sent = {str(i) for i, _, status in rows if status in ("sent", "delivered", "opened", "clicked")}
    lost = sent - received.keys()
    duplicated = {i for i, n in received.items() if n > 1}
    stray = received.keys() - ids
    unsent = len(rows) - len(sent)

    print(f"compressed day          scale {args.scale}: {count} recipients, {len(singles)} single sends, "
          f"{len(bulks)} bulk sends of {count} recipients, 4 broadcasts to all of them")
    print(f"deliveries              {len(rows)} written (expected {sum(expected.values())}): "
          + ", ".join(f"{c} {by_channel[c]}/{expected[c]}" for c in expected))
    print(f"statuses                {dict(sorted(statuses.items()))}")
    print(f"calls                   all answered in {called:.1f} s")
    print(f"wall time               {elapsed:.1f} s from the first call to the last delivery final "
          f"= {len(rows) / elapsed:.1f} deliveries/s")
    print("per channel             deliveries / (last sent − first accepted):")
    for channel in expected:
        span = spans.get(channel)
        if span and span["last"]:
            seconds = (span["last"] - span["first"]).total_seconds()
            print(f"  {channel:8} {by_channel[channel]:7d} in {seconds:7.1f} s = {by_channel[channel] / seconds:8.1f}/s")
    print(f"checker                 lost {len(lost)}, duplicated {len(duplicated)}, stray {len(stray)}, "
          f"not sent {unsent} (sandbox records of {len(received)} deliveries)")
    print("resident memory after the day (bench/memory.py):")
    print(memory.report(rss))
    if lost or duplicated or stray or unsent or len(rows) != sum(expected.values()):
        sys.exit("the day did not come out exact: see the checker line")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Latency at the daily mean (issue 14, benchmark 4): notifications sent open loop through the
HTTP API at a fixed rate of deliveries, in the daily channel mix; for each delivery, the time from
the API's 202 (accept) to the sandbox's record of the provider request that carried it.
Target: p99 < 1 s at 185 deliveries/s for at least 60 s.

    python bench/latency.py [--rate 185] [--duration 60] [--single] [--no-receipts] [--concurrency 2]

The daily volume is 10 M pushes (split evenly over APNs, FCM and Web Push), 1 M SMS and 5 M
emails: 16 M deliveries a day, 185/s on average. By default each notification goes to several
channels of one recipient, as a product sends them (an order update as a push to every device
and an email); ``--single`` sends one channel per notification instead (three times the API
calls for the same deliveries). Either way the deliveries have exactly the daily proportions.

Open loop: call ``i`` leaves at its scheduled time whatever the earlier calls do (``--clients``
threads, enough that none waits for a free one; how late the calls left is printed). Accept time
is when the 202 arrived at the client; receipt time is the sandbox record's ``time`` (the same
clock). When the API cannot accept at the offered rate, calls leave late and accept → provider
understates what a caller sees, so the latency from each call's scheduled time is printed too,
with a warning. A delivery the sandbox has no accepted record of by the end of the drain is counted as
undelivered. Then the resident memory of each process of the stack is printed (bench/memory.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import secrets
import threading
import time
from collections import Counter

import memory
from _setup import populate, reset_data, setup_django, stack_config, wait_final

#: Deliveries a day per channel (issue 14).
DAILY = {"apns": 10e6 / 3, "fcm": 10e6 / 3, "webpush": 10e6 / 3, "sms": 1e6, "email": 5e6}
_ALL = ("apns", "fcm", "webpush", "sms", "email")
_PUSH_EMAIL = ("apns", "fcm", "webpush", "email")
_EMAIL = ("email",)
#: One cycle of 15 notifications, 48 deliveries in the daily proportions (APNs, FCM and Web Push
#: 10 each, SMS 3, email 15), the kinds interleaved so that every channel's load is even in time.
GROUPED_CYCLE = (_ALL, _PUSH_EMAIL, _EMAIL, _PUSH_EMAIL, _PUSH_EMAIL, _ALL, _PUSH_EMAIL, _EMAIL,
                 _PUSH_EMAIL, _EMAIL, _ALL, _PUSH_EMAIL, _EMAIL, _PUSH_EMAIL, _EMAIL)


def cycle(single: bool) -> list[tuple[str, ...]]:
    """The notifications of one cycle, each a tuple of channels; with ``single`` one channel each.

    Raises:
        AssertionError: the cycle's deliveries are not in :data:`DAILY`'s proportions.
    """
    notifications = [(c,) for n in GROUPED_CYCLE for c in n] if single else list(GROUPED_CYCLE)
    counts = Counter(c for n in notifications for c in n)
    total, daily = sum(counts.values()), sum(DAILY.values())
    assert all(abs(counts[c] / total - DAILY[c] / daily) < 1e-9 for c in DAILY), counts
    return notifications


def schedule(rate: float, duration: float, single: bool) -> list[tuple[float, tuple[str, ...]]]:
    """(seconds after the start, channels) of every call: a call leaves when the deliveries
    before it, at ``rate`` per second, have used up their time."""
    calls, sent, notifications = [], 0, cycle(single)
    while sent / rate < duration:
        channels = notifications[len(calls) % len(notifications)]
        calls.append((sent / rate, channels))
        sent += len(channels)
    return calls


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of sorted ``values`` (NaN when empty)."""
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)] if values else float("nan")


class Receipts:
    """Polls the sandbox's accepted records in the background: delivery id → first record time."""

    def __init__(self, control_url: str, interval: float = 1.0):
        from sandbox.client import SandboxControl

        self.control = SandboxControl(control_url, timeout=60)
        self.since = self.control.last_seq()
        self.first: dict[str, float] = {}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        page = self.control.records_page(since=self.since, accepted=True)
        for record in page["records"]:
            if record.get("delivery_id"):
                self.first.setdefault(record["delivery_id"], record["time"])
        if page["records"]:
            self.since = page["records"][-1]["seq"]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def start(self) -> "Receipts":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=185.0, help="offered load, deliveries/s (daily mean: 185)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of sending")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="seconds after the last call to wait for the last deliveries")
    parser.add_argument("--single", action="store_true", help="one channel per notification")
    parser.add_argument("--warmup", type=int, default=100, help="notifications (to every channel) sent first")
    parser.add_argument("--recipients", type=int, default=50)
    parser.add_argument("--clients", type=int, default=64, help="threads making the paced calls")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes per channel")
    parser.add_argument("--no-receipts", action="store_true",
                        help="no provider status callbacks to the API (the sandbox does not call them)")
    args = parser.parse_args()

    setup_django("bench")
    reset_data()
    from devtools import demo
    from devtools.stack import Stack

    stack = Stack(stack_config("bench", concurrency=args.concurrency, receipts=not args.no_receipts)).start()
    try:
        key, _ = populate(stack, "bench", args.recipients)
        run = secrets.token_hex(3)

        def post(i: int, channels: tuple[str, ...] | None, prefix: str) -> tuple[float, list[dict]]:
            body = {"recipient": f"bench-{i % args.recipients}", "template": "order-shipped",
                    "data": {"name": "지우", "order": f"L-{i}"}, "event_id": f"{prefix}-{run}-{i}"}
            if channels:
                body["channels"] = list(channels)
            status, answer = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", body)
            assert status == 202, answer
            return time.time(), answer["deliveries"]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: post(i, None, "warmup"), range(args.warmup)))
        wait_final(300, "warm-up deliveries")

        calls = schedule(args.rate, args.duration, args.single)
        receipts = Receipts(stack.control_url).start()

        def paced(item: tuple[int, tuple[float, tuple[str, ...]]]) -> tuple[float, float, list[dict]]:
            i, (due, channels) = item
            delay = start + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            late = time.monotonic() - start - due
            accepted_at, deliveries = post(i, channels, "lat")
            return late, accepted_at, deliveries

        start, start_wall = time.monotonic(), time.time()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(paced, enumerate(calls)))
        sent_for = time.monotonic() - start
        accepted = {d["id"]: (at, d["channel"]) for _, at, ds in results for d in ds}
        due_at = {d["id"]: start_wall + due for (due, _), (_, _, ds) in zip(calls, results) for d in ds}
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and not set(accepted) <= receipts.first.keys():
            time.sleep(0.5)
        receipts.stop()
        memory_after = memory.snapshot(stack)
    finally:
        stack.stop()

    lateness = sorted(late for late, _, _ in results)
    by_channel: dict[str, list[float]] = {c: [] for c in DAILY}
    missing = Counter()
    for delivery_id, (at, channel) in accepted.items():
        if delivery_id in receipts.first:
            by_channel[channel].append((receipts.first[delivery_id] - at) * 1000)
        else:
            missing[channel] += 1
    everything = sorted(v for values in by_channel.values() for v in values)
    from_due = sorted((receipts.first[d] - due_at[d]) * 1000 for d in accepted if d in receipts.first)

    mode = "one channel per notification" if args.single else "several channels per notification"
    print(f"offered load            {args.rate:.1f} deliveries/s for {args.duration:.0f} s, daily mix "
          f"(APNs/FCM/Web Push 10/48 each, SMS 3/48, email 15/48), {mode}, "
          f"{'no status callbacks' if args.no_receipts else 'with status callbacks'}")
    print(f"sent                    {len(calls)} notifications, {len(accepted)} deliveries in {sent_for:.1f} s "
          f"= {len(accepted) / sent_for:.1f} deliveries/s offered ({len(calls) / sent_for:.1f} API calls/s)")
    print(f"call lateness           p50 {percentile(lateness, 50) * 1000:.0f} ms, p99 "
          f"{percentile(lateness, 99) * 1000:.0f} ms, max {lateness[-1] * 1000:.0f} ms (open loop: 0 = on time)")
    print("accept (202) → provider (sandbox record), ms:")
    print(f"  {'channel':8} {'n':>6} {'p50':>7} {'p99':>7} {'max':>7} {'undelivered':>12}")
    for channel, values in [*by_channel.items(), ("all", everything)]:
        values.sort()
        gone = sum(missing.values()) if channel == "all" else missing[channel]
        print(f"  {channel:8} {len(values):6d} {percentile(values, 50):7.0f} {percentile(values, 99):7.0f} "
              f"{(values[-1] if values else float('nan')):7.0f} {gone:12d}")
    print(f"  scheduled → provider   p50 {percentile(from_due, 50):.0f} ms, p99 {percentile(from_due, 99):.0f} ms, "
          f"max {(from_due[-1] if from_due else float('nan')):.0f} ms (from when the call was due: adds the wait "
          f"for the API)")
    if len(accepted) / sent_for < 0.95 * args.rate:
        print(f"WARNING                 the API accepted {len(accepted) / sent_for:.1f} deliveries/s, below the "
              f"{args.rate:.1f} offered: the accept → provider figures leave out the wait to be accepted")
    p99 = percentile(everything, 99)
    print(f"target p99 < 1000 ms    p99 {p99:.0f} ms = {p99 / 1000:.2f} × the target -> "
          f"{'OK' if p99 < 1000 and not missing else 'MISSED'}"
          f"{f' ({sum(missing.values())} undelivered after {args.drain:.0f} s)' if missing else ''}")
    print("resident memory after the run (bench/memory.py):")
    print(memory.report(memory_after))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""APNs in strict token mode: pushes through the API from two worker pools, and the 429s Apple
would answer (there should be none).

    python bench/apns_tokens.py [--pushes 10000] [--pools 2] [--concurrency 2] [--batch 500]
                                [--clients 4] [--api-port 18100] [--sandbox-port-base 19700]
                                [--per-process-tokens]

Apple wants one provider token (JWT) per key id and team, changed at most every 20 minutes; a
key whose token changes sooner gets 429 ``TooManyProviderTokenUpdates``. Every worker process
signs with the same key, so they must share one token (channels/tokens.py, through Redis).

The run starts the stack with the APNs channel alone, served by ``--pools`` separate Celery
workers on the apns queue of ``--concurrency`` processes each (2 × 2: four processes, one key),
puts the sandbox in strict token mode (``min_interval`` 1200 s) before anything is sent,
registers recipients with one iPhone each, sends ``--pushes`` notifications to APNs alone
through ``POST /api/v1/notifications/batch`` (``--batch`` per call, ``--clients`` calls at
once), and waits until every delivery is final. It prints the pushes sent, the deliveries'
statuses, the 429 answers (the sandbox's APNs records, its per-key refused updates, and the
deliveries' log rows), the distinct provider tokens the sandbox saw per key, the elapsed time
(first POST → last delivery final) and pushes/s, and ``zero 429s: yes/no``. Exit code 1 when
any 429 was seen or any push was not sent.

``--per-process-tokens`` is the contrast, the service as it was before tokens were shared: the
workers give each process its own in-memory token store (``bench/_per_process_tokens``), so
each process signs its own token and the sandbox refuses every token but the first it saw. The
429s (retries, backing off 0.5 to 5 s here) also open APNs' circuit breaker, so such a run does
not drain: after ``--timeout`` seconds it reports what is final and what is not.

Runs on the benchmarks' database, vhost and Redis database (bench/_setup.py; the environment
overrides them) with its own sandbox directory and logs (``var/apns-tokens-*``).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time

from _setup import ROOT, reset_data, setup_django, stack_config

NAME = "apns-tokens"
#: Apple's shortest interval between two provider tokens of one key (seconds).
MIN_INTERVAL = 1200
TOO_MANY = "TooManyProviderTokenUpdates"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=10_000)
    parser.add_argument("--recipients", type=int, default=200, help="each with one iOS device")
    parser.add_argument("--pools", type=int, default=2, help="separate worker pools on the apns queue")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes per pool")
    parser.add_argument("--batch", type=int, default=500, help="notifications per batch call (at most 500)")
    parser.add_argument("--clients", type=int, default=4, help="API calls in flight at once")
    parser.add_argument("--api-port", type=int, default=18100)
    parser.add_argument("--sandbox-port-base", type=int, default=19700)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every delivery to be final")
    parser.add_argument("--per-process-tokens", action="store_true",
                        help="contrast: every worker process keeps its own token (no shared store)")
    return parser.parse_args()


def configure_environment(args: argparse.Namespace) -> None:
    """Retry quickly (a 429 is a retry), and in the contrast mode make the children import the
    per-process token store; set before Django and the stack start so the children inherit it."""
    os.environ.setdefault("NOTIFY_APNS_BACKOFF_BASE", "0.5")
    os.environ.setdefault("NOTIFY_APNS_BACKOFF_MAX", "5")
    os.environ.setdefault("NOTIFY_APNS_RETRY_AFTER_MAX", "5")
    if args.per_process_tokens:
        paths = [str(ROOT / "bench" / "_per_process_tokens"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def pool_processes(stack) -> dict[str, int]:
    """Each APNs worker pool's name → how many processes it runs (its prefork children)."""
    out = {}
    for name, proc in stack.procs.items():
        if name.startswith("worker-apns"):
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            out[name] = len(children)
    return out


def outcomes_per_pool(stack, pools: list[str]) -> dict[str, dict[str, int]]:
    """Each APNs worker pool's name → its send outcomes counted in its log (one JSON line per
    attempt, logger ``notify.send``): ``sent``, or outcome and reason (``retrying:circuit_open``:
    handed back unsent while the provider's circuit breaker was open)."""
    out = {}
    for name in pools:
        counts: collections.Counter = collections.Counter()
        with open(stack.config.log_dir / f"{name}.log", errors="replace") as log:
            for line in log:
                if '"logger": "notify.send"' in line and '"outcome"' in line:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    reason = entry.get("reason")
                    counts[f"{entry.get('outcome')}:{reason}" if reason else entry.get("outcome")] += 1
        out[name] = dict(counts)
    return out


def main() -> int:
    args = parse_args()
    if not 1 <= args.batch <= 500:
        sys.exit("--batch must be 1 to 500")
    configure_environment(args)
    setup_django(NAME)
    reset_data()
    from django.db.models import Count, Q

    from devtools import demo
    from devtools.stack import Stack
    from notify.models import FINAL_STATUSES, REACHED_PROVIDER, Delivery, DeliveryLog
    from sandbox.client import SandboxControl

    config = dataclasses.replace(
        stack_config(NAME, concurrency=args.concurrency, channels=("apns",),
                     pools_per_channel={"apns": args.pools}),
        api_port=args.api_port, sandbox_port_base=args.sandbox_port_base)
    stack = Stack(config).start()
    try:
        ctl = SandboxControl(stack.control_url, timeout=120)
        # Before any send: Apple's rule, and nothing remembered from the sandbox's start.
        policy = ctl.apns_token_policy(True, MIN_INTERVAL)
        assert policy == {"strict": True, "min_interval": MIN_INTERVAL}, policy
        ctl.clear_apns_tokens()
        ctl.clear()
        processes = pool_processes(stack)

        app, key = demo.create_app(NAME)
        users = [f"ios-{i}" for i in range(args.recipients)]

        def register(user: str) -> None:
            status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}", {"name": user})
            assert status in (200, 201), body
            status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/recipients/{user}/devices",
                                     {"platform": "ios", "token": secrets.token_hex(32)})
            assert status in (200, 201), body

        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(register, users))

        def send(first: int) -> int:
            items = [{"recipient": users[i % len(users)], "template": "order-shipped", "channels": ["apns"],
                      "data": {"name": "지우", "order": f"T-{i}"}, "event_id": f"{NAME}-{i}"}
                     for i in range(first, min(first + args.batch, args.pushes))]
            status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications/batch", {"notifications": items})
            assert status == 202, body
            return sum(len(n["deliveries"]) for n in body["notifications"])

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            accepted = sum(pool.map(send, range(0, args.pushes, args.batch)))
        accepted_at = time.monotonic()
        deliveries = Delivery.objects.filter(notification__app=app)
        while (pending := deliveries.exclude(status__in=FINAL_STATUSES).count()) and \
                time.monotonic() - start < args.timeout:
            time.sleep(0.2)
        elapsed = time.monotonic() - start

        statuses = dict(deliveries.values_list("status").annotate(n=Count("id")).order_by("status"))
        sent = deliveries.filter(status__in=REACHED_PROVIDER).count()
        log_429 = DeliveryLog.objects.filter(delivery__notification__app=app).filter(
            Q(provider_status=429) | Q(reason__contains=TOO_MANY)).count()
        records = ctl.records("apns")
        answers = collections.Counter(r["status"] for r in records)
        record_429 = sum(1 for r in records if r["status"] == 429)
        accepted_ids = {r["delivery_id"] for r in records if r["accepted"]}
        keys = ctl.apns_tokens()["keys"]
        ctl.close()
    finally:
        stack.stop()
    per_pool = outcomes_per_pool(stack, list(processes))

    refused_updates = sum(k["refused_updates"] for k in keys.values())
    zero = record_429 == 0 and refused_updates == 0 and log_429 == 0
    tokens = "per-process (each process its own store)" if args.per_process_tokens else "shared through Redis"
    print(f"setup                   APNs alone, {len(processes)} worker pools on the apns queue "
          f"({', '.join(f'{n}: {c} processes' for n, c in processes.items())}); provider tokens {tokens}; "
          f"sandbox strict, min_interval {MIN_INTERVAL} s")
    print(f"send outcomes per pool  {per_pool}")
    print(f"pushes                  {args.pushes} requested, {accepted} accepted ({args.recipients} recipients, "
          f"batches of {args.batch}, {args.clients} API clients)")
    print(f"pushes sent             {sent}  (sandbox accepted {len(accepted_ids)} distinct deliveries)")
    print(f"statuses                {statuses}" + (f"  ({pending} not final after {args.timeout:.0f} s)" if pending else ""))
    print(f"sandbox APNs answers    {dict(sorted(answers.items()))}  ({len(records)} requests)")
    print(f"429 answers             sandbox records {record_429}, refused token updates {refused_updates}, "
          f"delivery log rows {log_429}")
    for kid, key_seen in keys.items():
        print(f"provider tokens, key {kid}: {len(key_seen['tokens'])} distinct, {key_seen['changes']} changes "
              f"between requests, requests per token {[t['requests'] for t in key_seen['tokens']]}")
    if not keys:
        print("provider tokens         none seen")
    print(f"elapsed                 {elapsed:.2f} s (API accepted all in {accepted_at - start:.2f} s) "
          f"→ {sent / elapsed:.1f} pushes/s")
    print(f"zero 429s: {'yes' if zero else 'no'}")
    return 0 if zero and sent == args.pushes else 1


if __name__ == "__main__":
    sys.exit(main())

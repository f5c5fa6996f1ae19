#!/usr/bin/env python
"""Accept path alone: requests/s and latency of ``POST /api/v1/notifications`` next to a bare DRF
view that validates the same body with the same serializer and writes nothing, behind the same
gunicorn, measured in one run with wrk.

    python bench/accept.py [--seconds 20] [--rounds 2] [--connections 16] [--threads 2]

Each recipient has five channels (iOS, Android, Web Push, SMS, email), so every send writes a
notification and five deliveries; every request carries a new ``event_id`` (a new notification,
not a replay). No relay or worker runs: the deliveries stay in the outbox. The phases alternate
(bare, send, bare, send, ...) so a noisy neighbour hurts both; each round prints its ratio.
Needs wrk (Debian package ``wrk``; ``make bench-accept`` installs it).
"""

from __future__ import annotations

import argparse
import base64
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import cpu
from _setup import reset_data, setup_django, stack_config

LUA = Path(__file__).with_name("accept.lua")
TARGET = 0.5


def _subscription() -> dict:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {"endpoint": f"https://push.example.com/{secrets.token_hex(8)}",
            "keys": {"p256dh": b64(point), "auth": b64(secrets.token_bytes(16))}}


def create_recipients(count: int) -> str:
    """The bench app with ``count`` recipients on five channels each; returns its API key."""
    from devtools import demo
    from notify.models import Device, Recipient

    app, key = demo.create_app("bench")
    for i in range(count):
        recipient = Recipient.objects.create(app=app, external_id=f"bench-{i}", name="사용자",
                                             email=f"user{i}@example.com", phone=f"+8210{10000000 + i}")
        subscription = _subscription()
        Device.objects.bulk_create([
            Device(app=app, recipient=recipient, platform="ios", token=secrets.token_hex(32)),
            Device(app=app, recipient=recipient, platform="android", token=demo.fcm_token()),
            Device(app=app, recipient=recipient, platform="web", token=subscription["endpoint"],
                   subscription=subscription)])
    return key


def run_wrk(url: str, key: str, seconds: int, connections: int, threads: int, run: str,
            recipients: int) -> dict:
    """One wrk run; returns ``{"rps", "p50", "p99", "bad"}`` (bad: answers other than 202)."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA),
         "-H", "Content-Type: application/json", "-H", f"Authorization: Api-Key {key}",
         url, "--", run, str(recipients)],
        capture_output=True, text=True, check=True).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        if not found:
            raise RuntimeError(f"wrk printed no {pattern!r}:\n{out}")
        return float(found.group(1))

    return {"rps": number(r"Requests/sec:\s+([\d.]+)"), "p50": number(r"P50_MS ([\d.]+)"),
            "p99": number(r"P99_MS ([\d.]+)"), "bad": int(number(r"NOT_202 (\d+)"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=2, help="bare/send pairs")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--recipients", type=int, default=50)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: `make bench-accept` installs it (Debian package wrk)")

    setup_django("bench")
    reset_data()
    key = create_recipients(args.recipients)
    from devtools.stack import Stack

    config = stack_config("bench")
    config.env["DJANGO_SETTINGS_MODULE"] = "bench.bare_settings"
    stack = Stack(config)
    results: list[tuple[dict, dict]] = []  # (bare, send) per round
    try:
        stack.start_api()
        urls = {"bare": f"{stack.api_url}/bench/bare", "send": f"{stack.api_url}/api/v1/notifications"}
        for name, url in urls.items():  # warm: connections, caches, prepared statements
            run_wrk(url, key, 3, args.connections, args.threads, f"warm-{name}", args.recipients)
        for round_ in range(args.rounds):
            measured = {}
            for name, url in urls.items():
                before = cpu.snapshot(stack)
                result = run_wrk(url, key, args.seconds, args.connections, args.threads,
                                 f"{name}-{round_}-{secrets.token_hex(3)}", args.recipients)
                after = cpu.snapshot(stack)
                requests = result["rps"] * args.seconds
                result["api_ms"] = (after["api"] - before["api"]) / requests * 1000
                result["pg_ms"] = (after["postgresql"] - before["postgresql"]) / requests * 1000
                result["redis_ms"] = (after["redis"] - before["redis"]) / requests * 1000
                measured[name] = result
            results.append((measured["bare"], measured["send"]))
    finally:
        stack.stop()

    print(f"accept path: {args.connections} connections, {args.threads} wrk threads, {args.seconds} s per phase, "
          f"recipients on 5 channels (a notification and 5 deliveries written per send)")
    print(f"{'round':<6}{'view':<6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-202':>9}"
          f"{'API CPU ms':>12}{'PG CPU ms':>11}{'Redis ms':>10}")
    ratios = []
    for index, (bare, send) in enumerate(results, 1):
        for name, r in (("bare", bare), ("send", send)):
            print(f"{index:<6}{name:<6}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['bad']:>9}"
                  f"{r['api_ms']:>12.2f}{r['pg_ms']:>11.2f}{r['redis_ms']:>10.2f}")
        ratios.append(send["rps"] / bare["rps"])
        print(f"{index:<6}ratio send / bare {ratios[-1]:.2f}")
    mean = sum(ratios) / len(ratios)
    print(f"mean ratio send / bare  {mean:.2f}  (target >= {TARGET}) -> {'OK' if mean >= TARGET else 'BELOW'}")
    if any(bare["bad"] or send["bad"] for bare, send in results):
        sys.exit("some requests were not answered 202 (see non-202)")


if __name__ == "__main__":
    main()

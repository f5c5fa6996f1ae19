#!/usr/bin/env python
"""Fault suite: send notifications through the HTTP API while, in turn, a worker is SIGKILLed,
RabbitMQ and PostgreSQL are restarted and providers fail, stall or fail after delivering; then
count what happened to every accepted delivery.

    python bench/faults.py [--notifications 10000] [--quick] [--skip rabbitmq,postgres]

Prints ``sent``, ``failed`` (by reason), ``dead-lettered``, ``lost`` (accepted but neither sent
nor failed at the end) and ``duplicates`` (a delivery shown twice to its user). Exit code 1 when
lost or duplicates is not 0, 2 when the run itself could not complete.

Runs on its own database (``notify_faults``), RabbitMQ vhost (``notify_faults``), Redis
database (3) and ports (API 18300, sandbox 19900+), so it never truncates the data of
``make bench-e2e``, ``make run`` or the tests. It does restart the machine's PostgreSQL and
RabbitMQ, which every user of this machine shares: ``--skip rabbitmq,postgres`` leaves them
alone. Both are running again when the script ends, whatever happened.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from typing import Any, Callable

from _setup import ROOT, reset_data, setup_django, stack_config

NAME = "faults"
API_PORT = 18300
SANDBOX_PORT_BASE = 19900
PENDING = ("queued", "sending", "retrying")
#: The sandbox provider that receives each channel's requests.
PROVIDER = {"apns": "apns", "fcm": "fcm", "webpush": "webpush", "sms": "twilio", "email": "ses"}
#: Recipient profiles, used in turn: which addresses a recipient has (mixed channels).
PROFILES = (
    ("email",),
    ("phone", "ios"),
    ("android", "email"),
    ("web", "phone"),
    ("email", "phone", "ios", "android", "web"),
)
FAULTS = ("worker", "burst", "rabbitmq", "stall", "postgres", "after_accept")
#: Seconds a provider call may take (channel timeouts): well below the lease, so a stall ends in
#: a timeout and never in a lease takeover of a live worker.
CHANNEL_TIMEOUT = 3
SEND_LEASE = 10
STALL_MS = 5000

T0 = time.monotonic()


def say(text: str) -> None:
    """Print one timestamped line (seconds since start and wall clock), flushed at once."""
    now = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{time.monotonic() - T0:7.1f}s {now}] {text}", flush=True)


# -- environment -------------------------------------------------------------------------------
def configure_environment() -> None:
    """Own namespace and a retry policy for faults, set before Django and the stack start so
    the stack's children inherit it."""
    os.environ.update({
        "NOTIFY_DB_NAME": f"notify_{NAME}",
        "NOTIFY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/notify_{NAME}",
        "NOTIFY_REDIS_URL": "redis://127.0.0.1:6379/3",
        "NOTIFY_SANDBOX_DIR": str(ROOT / "var" / f"{NAME}-sandbox"),
        "NOTIFY_PUBLIC_URL": f"http://127.0.0.1:{API_PORT}",
        "NOTIFY_RATE_LIMIT": "1000000/hour",
        "NOTIFY_SEND_LEASE": str(SEND_LEASE),
    })
    for channel in ("APNS", "FCM", "WEBPUSH", "SMS", "EMAIL"):
        # Enough attempts that a transient fault never dead-letters; short back-off so the run
        # drains in minutes.
        os.environ[f"NOTIFY_{channel}_MAX_ATTEMPTS"] = "30"
        os.environ[f"NOTIFY_{channel}_BACKOFF_BASE"] = "0.5"
        os.environ[f"NOTIFY_{channel}_BACKOFF_MAX"] = "5"
        os.environ[f"NOTIFY_{channel}_RETRY_AFTER_MAX"] = "5"
    for var in ("NOTIFY_APNS_TIMEOUT", "NOTIFY_FCM_TIMEOUT", "NOTIFY_WEBPUSH_TIMEOUT",
                "NOTIFY_TWILIO_TIMEOUT", "NOTIFY_SES_TIMEOUT"):
        os.environ[var] = str(CHANNEL_TIMEOUT)


def run(argv: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run a service command with a bound on its duration."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def ensure_namespace() -> None:
    """Create the suite's database and vhost if missing (as scripts/services.sh does for
    ``notify_bench``)."""
    db = os.environ["NOTIFY_DB_NAME"]
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc"]
    if "1" not in run(psql + [f"SELECT 1 FROM pg_database WHERE datname='{db}'"]).stdout:
        run(psql + [f"CREATE DATABASE {db}"])
    vhost = f"notify_{NAME}"
    if vhost not in run(["rabbitmqctl", "-q", "list_vhosts"]).stdout.split():
        run(["rabbitmqctl", "-q", "add_vhost", vhost])
    run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"])


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 90) -> bool:
    """Wait until ``port`` accepts connections; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.3)
    return False


def pg_cluster() -> list[str]:
    """``pg_ctlcluster`` arguments naming this machine's cluster (version, ``main``)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def ensure_services_up() -> None:
    """Start PostgreSQL and RabbitMQ again if a fault (or an interrupted run) left one down."""
    if not port_open(5432):
        say("PostgreSQL is down: starting it")
        run(pg_cluster() + ["start"], check=False)
        wait_port(5432)
    if not port_open(5672):
        say("RabbitMQ is down: starting it")
        # The node may still run with the app stopped (stop_app); else start the node.
        if run(["rabbitmqctl", "start_app"], timeout=90, check=False).returncode != 0:
            run(["rabbitmq-server", "-detached"], check=False)
        wait_port(5672)
    run(["rabbitmqctl", "-q", "await_startup"], timeout=120, check=False)


# -- API client --------------------------------------------------------------------------------
class Api:
    """Minimal JSON client of the notify API that retries what the documented client contract
    says to retry: connection errors, timeouts, 5xx and 429, with the same Idempotency-Key."""

    def __init__(self, url: str, key: str):
        self.url = url
        self.key = key

    def call(self, method: str, path: str, body: dict | None = None,
             headers: dict | None = None) -> tuple[int, Any]:
        """One request; returns (status, parsed JSON or None). Status 0 = no answer arrived."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Api-Key {self.key}", "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, _json(exc.read())
            except OSError:  # the error body was cut off
                return exc.code, None
        except (OSError, ValueError):  # refused, reset, timed out, truncated answer
            return 0, None

    def call_retrying(self, method: str, path: str, body: dict | None = None,
                      headers: dict | None = None, budget: float = 180) -> tuple[int, Any, int]:
        """``call`` again while the answer is transient; returns (status, body, retries)."""
        deadline = time.monotonic() + budget
        retries = 0
        delay = 0.2
        while True:
            status, answer = self.call(method, path, body, headers)
            if not (status == 0 or status == 429 or status >= 500) or time.monotonic() > deadline:
                return status, answer, retries
            retries += 1
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 3.0)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None  # an HTML 500 page or a cut-off body


def sandbox_subscription(control_url: str) -> dict:
    """A Web Push subscription made by the sandbox's push service, as a browser would."""
    request = urllib.request.Request(control_url + "/webpush/subscriptions", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def create_recipients(api: Api, control_url: str, count: int) -> list[str]:
    """Register ``count`` recipients through the API, cycling through PROFILES."""
    from devtools import demo

    users = []
    for i in range(count):
        profile = PROFILES[i % len(PROFILES)]
        user = f"faults-{i}"
        person: dict[str, Any] = {"name": "사용자"}
        if "email" in profile:
            person["email"] = f"user{i}@example.com"
        if "phone" in profile:
            person["phone"] = f"+8210{20000000 + i}"
        status, body, _ = api.call_retrying("PUT", f"/api/v1/recipients/{user}", person)
        assert status in (200, 201), (status, body)
        devices = []
        if "ios" in profile:
            devices.append({"platform": "ios", "token": secrets.token_hex(32)})
        if "android" in profile:
            devices.append({"platform": "android", "token": demo.fcm_token()})
        if "web" in profile:
            devices.append({"platform": "web", "subscription": sandbox_subscription(control_url)})
        for device in devices:
            status, body, _ = api.call_retrying("POST", f"/api/v1/recipients/{user}/devices", device)
            assert status in (200, 201), (status, body)
        users.append(user)
    return users


# -- sending -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Sent:
    """What the senders saw: the 202 bodies by notification id, refusals, retries."""

    accepted: dict[str, dict] = dataclasses.field(default_factory=dict)
    refused: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    retries: int = 0
    answered: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def delivery_ids(self, status: str | None = None) -> set[str]:
        """Ids of the accepted deliveries (of the given 202 status, e.g. ``queued``)."""
        return {d["id"] for body in self.accepted.values() for d in body["deliveries"]
                if status is None or d["status"] == status}


def send_all(api: Api, users: list[str], count: int, clients: int, duration: float, run_id: str,
             sent: Sent) -> Sent:
    """POST ``count`` notifications from ``clients`` threads, spread over at least ``duration``
    seconds so the faults meet live traffic; a transient failure is retried with the same
    Idempotency-Key and only a 202 counts as accepted. Fills and returns ``sent``."""
    start = time.monotonic()
    interval = duration / count if count else 0

    def one(i: int) -> None:
        time.sleep(max(0.0, start + i * interval - time.monotonic()))
        body = {"recipient": users[i % len(users)], "template": "order-shipped",
                "data": {"name": "지우", "order": f"F-{i}"}}
        status, answer, retries = api.call_retrying("POST", "/api/v1/notifications", body,
                                                    headers={"Idempotency-Key": f"{run_id}-{i}"})
        with sent.lock:
            sent.retries += retries
            sent.answered += 1
            done = sent.answered
            if status == 202 and answer:
                sent.accepted[answer["id"]] = answer
            else:
                code = (answer or {}).get("error", {}).get("code") if isinstance(answer, dict) else None
                sent.refused[f"{status} {code or ''}".strip()] += 1
        if done % max(1, count // 10) == 0:
            say(f"sender: {done}/{count} requests answered")

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(one, i) for i in range(count)]:
            future.result()
    return sent


# -- faults ------------------------------------------------------------------------------------
def pool_children(stack, channel: str) -> list[int]:
    """Pids of the prefork processes of one channel's worker pool."""
    out = run(["ps", "--ppid", str(stack.procs[f"worker-{channel}"].pid), "-o", "pid="], check=False)
    return [int(pid) for pid in out.stdout.split()]


def kill_worker(stack, channel: str) -> None:
    """SIGKILL one process of a channel's pool (its parent forks a replacement)."""
    children = pool_children(stack, channel)
    if not children:
        say(f"fault: no {channel} worker process to kill")
        return
    pid = random.choice(children)
    os.kill(pid, signal.SIGKILL)
    say(f"fault: SIGKILL {channel} worker process {pid}")


def restart_rabbitmq(down: float) -> None:
    """Stop the RabbitMQ application (every connection drops), wait ``down`` s, start it."""
    say("fault: RabbitMQ stop_app")
    run(["rabbitmqctl", "stop_app"], timeout=120)
    time.sleep(down)
    run(["rabbitmqctl", "start_app"], timeout=120)
    run(["rabbitmqctl", "-q", "await_startup"], timeout=120)
    say("fault: RabbitMQ started again")


def restart_pool(stack, channel: str) -> None:
    """Start a stopped channel pool again and wait until it consumes (its log says ready)."""
    log = stack.config.log_dir / f"worker-{channel}.log"
    seen = log.stat().st_size if log.exists() else 0  # the log keeps the first start's "ready."
    stack.spawn_worker(channel)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with open(log, "rb") as fh:
            fh.seek(seen)
            if b"ready." in fh.read():
                say(f"fault: {channel} worker pool started again")
                return
        time.sleep(0.2)
    raise RuntimeError(f"{channel} worker pool not ready after 90s")


def restart_postgres(stack, down: float, backlog_for: float) -> None:
    """Restart PostgreSQL while a worker pool meets a backlog: the email pool is stopped for
    ``backlog_for`` s, the database is stopped (fast: open transactions roll back), the pool
    starts again and claims during the outage, and ``down`` s later the database starts."""
    stack.stop_worker("email")  # SIGTERM to its process group, as a supervisor stop does
    say(f"fault: email worker pool stopped for {backlog_for:g}s (a backlog for the database restart)")
    time.sleep(backlog_for)
    say("fault: PostgreSQL stop -m fast")
    run(pg_cluster() + ["stop", "-m", "fast"], timeout=120)
    try:
        restart_pool(stack, "email")
        time.sleep(down)
    finally:
        run(pg_cluster() + ["start"], timeout=120)
        wait_port(5432)
    say("fault: PostgreSQL started again")


def provider_faults(ctl, seconds: float, rules: list[dict], during: Callable[[], None] | None = None) -> None:
    """Keep the sandbox fault ``rules`` active for ``seconds``; ``during`` runs a second in."""
    ids = [ctl.add_fault(**rule)["id"] for rule in rules]
    say(f"fault: {', '.join(_describe(r) for r in rules)} for {seconds:g}s")
    try:
        if during:
            time.sleep(min(1.0, seconds))
            during()
        time.sleep(max(0.0, seconds - (1.0 if during else 0.0)))
    finally:
        hits = {f["id"]: f["hits"] for f in ctl.faults()}
        for rule_id in ids:
            ctl.delete_fault(rule_id)
    say(f"fault: provider rules removed (hits {[hits.get(i, 'expired') for i in ids]})")


def _describe(rule: dict) -> str:
    parts = [rule["provider"]]
    if rule.get("status"):
        parts.append(str(rule["status"]))
    if rule.get("after_accept"):
        parts.append("after accept")
    if rule.get("latency_ms"):
        parts.append(f"stall {rule['latency_ms']}ms")
    parts.append(f"rate {rule.get('rate', 1.0)}")
    return " ".join(parts)


def fault_plan(stack, ctl, skip: set[str], hold: float) -> list[tuple[str, Callable[[], None]]]:
    """The faults, in the order they are applied."""
    stall = [{"provider": p, "latency_ms": STALL_MS, "rate": 1.0} for p in ("twilio", "webpush")]
    plan = [
        ("worker", lambda: kill_worker(stack, "apns")),
        ("burst", lambda: provider_faults(ctl, hold, [
            {"provider": "ses", "status": 503, "rate": 0.3},
            {"provider": "fcm", "status": 503, "rate": 0.3}])),
        ("rabbitmq", lambda: restart_rabbitmq(down=3)),
        # Killing an SMS worker while Twilio stalls catches it mid-send (unknown outcome).
        ("stall", lambda: provider_faults(ctl, hold, stall, during=lambda: kill_worker(stack, "sms"))),
        ("postgres", lambda: restart_postgres(stack, down=2, backlog_for=hold)),
        ("after_accept", lambda: provider_faults(ctl, hold, [
            {"provider": "apns", "status": 503, "after_accept": True, "rate": 0.3},
            {"provider": "webpush", "status": 503, "after_accept": True, "rate": 0.3}])),
    ]
    return [(name, fn) for name, fn in plan if name not in skip]


class FaultScheduler(threading.Thread):
    """Applies the plan in turn, spread over the sending (fault k of n once ``progress()``, the
    fraction of requests answered, reaches k/n) and at least ``pause`` seconds apart; records
    errors instead of dying."""

    def __init__(self, plan: list[tuple[str, Callable[[], None]]], pause: float, delay: float,
                 progress: Callable[[], float], recover: Callable[[], None]):
        super().__init__(name="faults", daemon=True)
        self.plan = plan
        self.pause = pause
        self.delay = delay
        self.progress = progress
        self.recover = recover
        self.errors: list[str] = []
        self.applied: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        """Run each fault when its turn comes (stops early when asked)."""
        if self.stopping.wait(self.delay):
            return
        for index, (name, apply) in enumerate(self.plan):
            if index and self._wait_turn(index):
                return
            try:
                apply()
                self.applied.append(name)
            except Exception as exc:  # noqa: BLE001 - report, restore services, go on
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                say(f"fault {name} failed: {exc}")
                self.recover()

    def _wait_turn(self, index: int) -> bool:
        """Wait the pause, then until the sending is far enough; True when asked to stop."""
        if self.stopping.wait(self.pause):
            return True
        while self.progress() < index / len(self.plan):
            if self.stopping.wait(0.5):
                return True
        return False


def recover(stack) -> None:
    """Undo what a failed fault may have left behind: a service or a worker pool down."""
    ensure_services_up()
    for channel in stack.config.channels:
        if f"worker-{channel}" not in stack.procs:
            restart_pool(stack, channel)


# -- results -----------------------------------------------------------------------------------
def db_retry(fn: Callable[[], Any], timeout: float = 120) -> Any:
    """Run a query, waiting out a database restart (this process's connection breaks too)."""
    from notify.dbretry import through_outage

    return through_outage("reading results", timeout, fn)


def wait_final(timeout: float) -> bool:
    """Wait until no delivery is queued, sending or retrying (the database holds only this
    run's); False on timeout."""
    from notify.models import Delivery

    deadline = time.monotonic() + timeout
    last_note = 0.0
    while True:
        counts = db_retry(lambda: dict(collections.Counter(
            Delivery.objects.filter(status__in=PENDING).values_list("status", flat=True))))
        if not counts:
            return True
        if time.monotonic() > deadline:
            return False
        if time.monotonic() - last_note > 10:
            say(f"waiting: {counts}")
            last_note = time.monotonic()
        time.sleep(1)


def collect_records(ctl) -> list[dict]:
    """Every accepted provider record that carries a delivery id, provider by provider."""
    records = []
    for provider in sorted(set(PROVIDER.values())):
        cursor = None
        for _ in range(1000):  # pages until nothing new
            page = ctl.records_page(provider, since=cursor, accepted=True)
            records += [r for r in page["records"] if r.get("delivery_id")]
            if not page["records"]:
                break
            cursor = page["records"][-1]["seq"]
    return records


def duplicates(records: list[dict], accepted: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Deliveries seen twice, by channel: (accepted by the provider more than once, shown to the
    user more than once after the provider's collapse rules: the sandbox's inbox)."""
    from sandbox.inbox import build_inbox

    channel_of = {p: c for c, p in PROVIDER.items()}
    raw = collections.Counter(r["delivery_id"] for r in records if r["delivery_id"] in accepted)
    shown = collections.Counter(r["delivery_id"] for r in build_inbox(records) if r["delivery_id"] in accepted)
    provider = {r["delivery_id"]: r["provider"] for r in records}
    by_channel = lambda counter: dict(collections.Counter(  # noqa: E731
        channel_of[provider[d]] for d, n in counter.items() if n > 1))
    return by_channel(raw), by_channel(shown)


def summarise(sent: Sent, records: list[dict], elapsed: float, finished: bool) -> tuple[int, int]:
    """Print the report; returns (lost, duplicates)."""
    from notify.models import FINAL_STATUSES, REACHED_PROVIDER, Delivery, Notification

    rows = db_retry(lambda: list(Delivery.objects.values_list("id", "channel", "status", "reason")))
    notification_ids = db_retry(lambda: set(map(str, Notification.objects.values_list("id", flat=True))))
    status_of = {str(i): (c, s, r) for i, c, s, r in rows}
    queued = sent.delivery_ids("queued")
    missing_notifications = set(sent.accepted) - notification_ids
    lost = {d for d in queued if d not in status_of or status_of[d][1] not in FINAL_STATUSES}
    final = [status_of[d] for d in queued if d in status_of]
    statuses = collections.Counter(s for _, s, _ in final)
    reasons = lambda status: dict(collections.Counter(  # noqa: E731
        f"{c}:{r}" for c, s, r in final if s == status).most_common())
    raw_dups, shown_dups = duplicates(records, queued)
    delivered = {r["delivery_id"] for r in records}
    sent_unrecorded = [d for d in queued if d in status_of and status_of[d][1] in REACHED_PROVIDER and d not in delivered]
    failed_delivered = collections.Counter(
        f"{status_of[d][0]}:{status_of[d][2]}" for d in queued
        if d in status_of and status_of[d][1] in ("failed", "dead_lettered") and d in delivered)
    dup_total = sum(shown_dups.values())

    print()
    print(f"notifications accepted  {len(sent.accepted)} (refused {dict(sent.refused) or 0}, "
          f"client retries {sent.retries}, not in the database {len(missing_notifications)})")
    print(f"deliveries              {len(sent.delivery_ids())} "
          f"({len(queued)} queued at accept, {len(sent.delivery_ids('suppressed'))} suppressed at accept)")
    print(f"by channel              {dict(collections.Counter(c for c, _, _ in final))}")
    print(f"sent                    {sum(statuses[s] for s in REACHED_PROVIDER)} "
          f"({', '.join(f'{s} {statuses[s]}' for s in sorted(REACHED_PROVIDER) if statuses[s])})")
    print(f"failed                  {statuses['failed']} {reasons('failed') or ''}")
    print(f"dead-lettered           {statuses['dead_lettered']} {reasons('dead_lettered') or ''}")
    print(f"expired / suppressed    {statuses['expired']} / {statuses['suppressed']}")
    print(f"lost                    {len(lost)}" + (f" e.g. {sorted(lost)[:5]} "
          f"{dict(collections.Counter(status_of.get(d, ('?', 'missing', ''))[1] for d in lost))}" if lost else ""))
    print(f"duplicates              {dup_total} shown twice to the user {shown_dups or ''}")
    print(f"provider resends        {sum(raw_dups.values())} deliveries accepted more than once by the "
          f"provider {raw_dups or ''} (push collapses them on the device)")
    print(f"sent, no provider record {len(sent_unrecorded)}")
    print(f"failed yet delivered    {sum(failed_delivered.values())} {dict(failed_delivered) or ''}")
    print(f"elapsed                 {elapsed:.1f} s (first request → every delivery final"
          f"{'' if finished else ', GAVE UP WAITING'})")
    print(f"throughput              {len(final) / elapsed:.1f} deliveries/s, "
          f"{len(sent.accepted) / elapsed:.1f} notifications/s")
    return len(lost) + len(missing_notifications), dup_total


# -- main --------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    """Command line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--notifications", type=int, default=10_000, help="default 10,000")
    parser.add_argument("--quick", action="store_true", help="1,000 notifications, shorter pauses")
    parser.add_argument("--recipients", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8, help="concurrent API callers")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes per channel")
    parser.add_argument("--pause", type=float, default=8, help="seconds between faults")
    parser.add_argument("--hold", type=float, default=5, help="seconds a provider fault lasts")
    parser.add_argument("--duration", type=float, default=None,
                        help="spread the sends over at least this many seconds (default: the fault plan)")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for every delivery to end")
    parser.add_argument("--skip", default="", help=f"comma-separated faults to leave out: {','.join(FAULTS)}")
    args = parser.parse_args()
    if args.quick:
        args.notifications, args.pause = 1000, 5
    if args.notifications < 1:
        parser.error("--notifications must be at least 1")
    args.skip = {s for s in args.skip.split(",") if s}
    if args.skip - set(FAULTS):
        parser.error(f"--skip takes {','.join(FAULTS)}")
    return args


def main() -> int:
    """Set up, send under faults, wait, report; returns the exit code."""
    args = parse_args()
    configure_environment()
    ensure_services_up()
    ensure_namespace()
    setup_django(NAME)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per sandbox control call
    reset_data()
    from devtools import demo
    from devtools.stack import Stack
    from sandbox.client import SandboxControl

    config = dataclasses.replace(stack_config(NAME, concurrency=args.concurrency),
                                 api_port=API_PORT, sandbox_port_base=SANDBOX_PORT_BASE)
    stack = Stack(config)
    scheduler = None
    try:
        stack.start()
        say(f"stack up (logs in {config.log_dir})")
        ctl = SandboxControl(stack.control_url, timeout=120)
        ctl.clear()
        ctl.clear_faults()
        _, key = demo.create_app(NAME)
        api = Api(stack.api_url, key)
        users = create_recipients(api, stack.control_url, args.recipients)
        say(f"{len(users)} recipients with mixed channels")

        plan = fault_plan(stack, ctl, args.skip, args.hold)
        sent = Sent()
        scheduler = FaultScheduler(plan, pause=args.pause, delay=2, recover=lambda: recover(stack),
                                   progress=lambda: sent.answered / args.notifications)
        duration = args.duration if args.duration is not None else 2 + len(plan) * (args.pause + args.hold)
        say(f"sending {args.notifications} notifications over >= {duration:.0f}s "
            f"with faults {[name for name, _ in plan]}")
        start = time.monotonic()
        scheduler.start()
        send_all(api, users, args.notifications, args.clients, duration, secrets.token_hex(4), sent)
        say(f"sending done: {len(sent.accepted)} accepted")
        scheduler.join(timeout=600)
        say("faults done" + (f" (errors: {scheduler.errors})" if scheduler.errors else ""))
        finished = wait_final(args.wait)
        elapsed = time.monotonic() - start
        say("every accepted delivery is final" if finished else f"gave up after {args.wait:.0f}s")
        records = collect_records(ctl)
        lost, dups = summarise(sent, records, elapsed, finished)
        print(f"faults applied          {scheduler.applied}" + (f", errors {scheduler.errors}" if scheduler.errors else ""))
        print(f"result                  {'OK' if not (lost or dups) else 'FAIL'}: lost {lost}, duplicates {dups}")
        return 1 if lost or dups else 0
    finally:
        if scheduler is not None:
            scheduler.stopping.set()
            scheduler.join(timeout=300)
        stack.stop()
        ensure_services_up()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - the run itself broke (stack did not start, ...)
        traceback.print_exc()
        sys.exit(2)

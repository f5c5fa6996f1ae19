"""Shared start-up of the benchmarks: their own database, vhost, Redis database and ports, so a
benchmark never disturbs `make run` or the tests."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_database(name: str) -> None:
    """Create the PostgreSQL database ``name`` if it does not exist (a new machine has none of
    the benchmarks' databases); the server is ``NOTIFY_DB_HOST`` / ``NOTIFY_DB_USER``'s."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=os.environ.get("NOTIFY_DB_HOST", "127.0.0.1"),
                         user=os.environ.get("NOTIFY_DB_USER", "postgres"), dbname="postgres",
                         autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def setup_django(name: str = "bench") -> None:
    """Point settings at the benchmark's own services (its database created if missing) and run
    migrations."""
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
    ensure_database(os.environ.setdefault("NOTIFY_DB_NAME", "notify_bench"))
    os.environ.setdefault("NOTIFY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/notify_bench")
    os.environ.setdefault("NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/2")
    os.environ.setdefault("NOTIFY_SANDBOX_DIR", str(ROOT / "var" / f"{name}-sandbox"))
    os.environ.setdefault("NOTIFY_PUBLIC_URL", "http://127.0.0.1:18100")
    os.environ.setdefault("NOTIFY_RATE_LIMIT", "1000000/hour")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def bench_ports() -> tuple[int, int]:
    """(API port, sandbox port base) of a benchmark's stack: ``NOTIFY_TEST_API_PORT`` and
    ``NOTIFY_TEST_SANDBOX_PORT_BASE`` when set (a shared machine gives each user its own, as for
    the tests), else 18100 and 19700."""
    return (int(os.environ.get("NOTIFY_TEST_API_PORT", 18100)),
            int(os.environ.get("NOTIFY_TEST_SANDBOX_PORT_BASE", 19700)))


def stack_config(name: str = "bench", concurrency: int = 2, receipts: bool = True, **overrides):
    """The benchmark stack's StackConfig: its ports, database, sandbox and log directories.

    ``receipts=False`` leaves the providers' status callbacks out (Twilio's ``sent`` and
    ``delivered`` for each SMS): the workers advertise a callback host that is neither loopback
    nor in the sandbox's ``--callback-hosts``, so the sandbox records them as refused and never
    POSTs them. The API's own URL is unchanged (a benchmark calls it directly).
    """
    from devtools.stack import StackConfig

    api_port, sandbox_port_base = bench_ports()
    env = {"NOTIFY_DB_NAME": os.environ["NOTIFY_DB_NAME"]}
    if not receipts:
        env["NOTIFY_PUBLIC_URL"] = f"http://receipts-off.invalid:{api_port}"
    return StackConfig(
        env=env, api_port=api_port, sandbox_port_base=sandbox_port_base,
        sandbox_dir=Path(os.environ["NOTIFY_SANDBOX_DIR"]),
        log_dir=ROOT / "var" / f"{name}-log", concurrency=concurrency, flower_port=None, **overrides)


def reset_data() -> None:
    """Empty the benchmark database's notification tables and the queues of its vhost."""
    from django.db import connection

    from notify.celery import app

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE notify_deliverylog, notify_delivery, notify_notification, notify_preference, "
                       "notify_device, notify_recipient, notify_template, notify_appapikey, notify_app CASCADE")
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue.bind(conn.default_channel).declare()
            queue.bind(conn.default_channel).purge()
    from django.core.cache import cache

    cache.clear()


def populate(stack, app_name: str, recipients: int, prefix: str = "bench") -> tuple[str, list[dict]]:
    """Create the app ``app_name`` (demo template ``order-shipped``) and ``recipients`` recipients
    ``<prefix>-<i>``, each with an email address, a phone number and an iOS, Android and Web
    device, through the API.

    Returns:
        (API key, addresses): one ``{"apns", "fcm", "webpush", "sms", "email"}`` dict per recipient
        (the Web Push value is the subscription dict), for pipelines that skip notify.
    """
    import secrets

    from devtools import demo

    _, key = demo.create_app(app_name)
    addresses = []
    for i in range(recipients):
        user = f"{prefix}-{i}"
        address = {"apns": secrets.token_hex(32), "fcm": demo.fcm_token(),
                   "webpush": demo.sandbox_subscription(stack.control_url),
                   "sms": f"+8210{10000000 + i}", "email": f"user{i}@example.com"}
        status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}",
                                 {"name": "사용자", "email": address["email"], "phone": address["sms"]})
        assert status in (200, 201), body
        for device in ({"platform": "ios", "token": address["apns"]},
                       {"platform": "android", "token": address["fcm"]},
                       {"platform": "web", "subscription": address["webpush"]}):
            status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/recipients/{user}/devices", device)
            assert status in (200, 201), body
        addresses.append(address)
    return key, addresses


def wait_final(timeout: float, what: str = "deliveries") -> None:
    """Wait until every delivery in the database is in a final status.

    Raises:
        RuntimeError: some are not after ``timeout`` seconds.
    """
    import time

    from notify.models import FINAL_STATUSES, Delivery

    deadline = time.monotonic() + timeout
    while Delivery.objects.exclude(status__in=FINAL_STATUSES).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not finish in {timeout:.0f} s")
        time.sleep(0.1)


def post_json(url: str, key: str, body: bytes | dict, timeout: float = 300) -> tuple[int, dict]:
    """POST ``body`` (JSON bytes, or a dict to encode) with the app's API key; returns (HTTP
    status, decoded answer), a 4xx/5xx included."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Api-Key {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")

"""Helpers for assertions on the real services."""

from __future__ import annotations

import base64
import contextlib
import secrets
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channels import registry


def queue_depths() -> dict[str, int]:
    """Messages waiting on each channel queue of the test vhost (passive declare: creates nothing)."""
    from notify.celery import app

    depths = {}
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in registry.channels():
            depths[name] = channel.queue_declare(queue=name, passive=True).message_count
    return depths


def dangling_delivery_references() -> dict[str, int]:
    """Deliveries whose notification or device no longer exists. Their foreign keys are not in
    the database (migration 0018), so the code that deletes those rows must clear them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM notify_notification n WHERE n.id = d.notification_id)),
                   count(*) FILTER (WHERE d.device_id IS NOT NULL
                                    AND NOT EXISTS (SELECT 1 FROM notify_device dv WHERE dv.id = d.device_id))
            FROM notify_delivery d""")
        notification, device = cursor.fetchone()
    return {"notification": notification, "device": device}


def db_counts() -> dict[str, int]:
    from notify.models import Delivery, DeliveryLog, Device, Notification, Preference, Recipient

    return {m.__name__: m.objects.count() for m in (Notification, Delivery, DeliveryLog, Recipient, Device, Preference)}


def browser_subscription(endpoint: str = "https://push.example.net/wp/abc") -> dict:
    """A Web Push subscription with a real P-256 public key and auth secret, as a browser makes."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return {"endpoint": endpoint, "keys": {"p256dh": b64(point), "auth": b64(secrets.token_bytes(16))}}


def queued_tasks(queue: str, timeout: float = 5) -> list[dict]:
    """The tasks waiting on a queue of the test vhost, oldest first, left where they are.

    Each message is fetched with basic.get and not acknowledged, so RabbitMQ puts it back when
    the channel closes; this waits until the queue holds them all again, so a queue depth read
    right after sees what was there before. Returns ``{"task", "args", "argsrepr"}`` per message.
    """
    from kombu import Queue

    from notify.celery import app
    from tests.conftest import wait_until

    depth = queue_depth(queue)
    tasks = []
    with app.connection_for_write() as conn:
        channel = conn.channel()
        try:
            bound = Queue(queue, no_declare=True).bind(channel)
            while (message := bound.get(no_ack=False, accept=["json"])) is not None:
                args, _kwargs, _embed = message.decode()
                tasks.append({"task": message.headers["task"], "args": args, "argsrepr": message.headers["argsrepr"]})
        finally:
            channel.close()
    wait_until(lambda: queue_depth(queue) == depth, timeout=timeout, message=f"the messages to return to {queue}")
    return tasks


def queue_depth(queue: str) -> int:
    """Messages ready on one queue of the test vhost (passive declare)."""
    from notify.celery import app

    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue=queue, passive=True).message_count


def separate_session():
    """A psycopg 3 connection (autocommit) of its own to the database the code under test uses
    (the test database): another process's view, outside the test's transaction."""
    import psycopg
    from django.db import connection

    s = connection.settings_dict
    return psycopg.connect(host=s["HOST"], port=s["PORT"], user=s["USER"], password=s["PASSWORD"] or None,
                           dbname=s["NAME"], autocommit=True)


class OutboxListener:
    """A separate PostgreSQL session (psycopg 3) that LISTENs on the outbox's wake-up channel, as
    the relay does, on the database the code under test uses (the test database)."""

    def __init__(self):
        from notify.store import OUTBOX_EVENT

        self.event = OUTBOX_EVENT
        self.conn = separate_session()
        self.conn.execute(f"LISTEN {self.event}")

    def wait(self, timeout: float = 5) -> list[str]:
        """Block until one wake-up arrives (or ``timeout``); the payloads received."""
        return [n.payload for n in self.conn.notifies(timeout=timeout, stop_after=1)]

    def received(self, timeout: float = 5) -> list[str]:
        """The payloads of every wake-up committed so far and not yet read.

        Deterministic without sleeping: PostgreSQL delivers notifications in commit order, so
        after a marker NOTIFY committed now has arrived, everything committed before it has too.
        """
        marker = f"marker-{secrets.token_hex(8)}"
        self.conn.execute("SELECT pg_notify(%s, %s)", [self.event, marker])
        payloads = []
        for notify in self.conn.notifies(timeout=timeout):
            if notify.payload == marker:
                return payloads
            payloads.append(notify.payload)
        raise AssertionError(f"the marker notification did not come back within {timeout}s")

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def broker_unreachable(monkeypatch):
    """Within the block ``notify.celery.app`` is a real Celery app whose broker is a port where
    nothing listens: a real publish fails at once (kombu's OperationalError)."""
    from celery import Celery

    down = Celery("down", config_source="celeryconfig")
    down.conf.broker_url = "amqp://guest:guest@127.0.0.1:1//"
    down.conf.broker_connection_timeout = 1
    down.conf.broker_connection_retry = False
    down.conf.broker_connection_max_retries = 0
    with monkeypatch.context() as patched:
        patched.setattr("notify.celery.app", down)
        yield


def flush_retrying_deadlocks(flush, attempts: int = 5):
    """Wrap ``DatabaseOperations.execute_sql_flush`` (Django's teardown of a transactional test:
    one TRUNCATE of every table) so that a deadlock is retried, up to ``attempts`` times.

    Why: a stack test's workers, relay and maintenance keep running while its module's tests
    tear down, and their transactions take row locks on several tables in their own order. The
    TRUNCATE takes ACCESS EXCLUSIVE locks one table at a time, so it can wait on one of them
    while that transaction waits on a table the TRUNCATE already holds; PostgreSQL then aborts
    the TRUNCATE (SQLSTATE 40P01). The statement ran in its own transaction, which was rolled
    back, so it is safe to run again once the other side has gone on. Any other error is raised.
    """
    import functools

    @functools.wraps(flush)
    def wrapper(self, sql_list):
        for attempt in range(1, attempts + 1):
            try:
                return flush(self, sql_list)
            except Exception as exc:  # Django's OperationalError wraps psycopg's DeadlockDetected
                if attempt == attempts or getattr(exc.__cause__, "sqlstate", None) != "40P01":
                    raise
                time.sleep(0.05 * attempt)

    return wrapper

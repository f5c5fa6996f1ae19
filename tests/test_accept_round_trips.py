"""The accept path's round trips: a send costs a fixed, small number of PostgreSQL and Redis
round trips whatever the number of channels it goes to.

PostgreSQL's are read off libpq's own protocol trace (every Sync or simple Query message the
client sends is answered before it goes on), Redis' off the client's socket writes (one per
command, one per pipeline). The request runs in this process, through DRF's test client, on a
database used without a test transaction (``transaction=True``), so its BEGIN/COMMIT are those
production pays, and with the per-request connection health check production makes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import re
import secrets
import tempfile
from dataclasses import dataclass

import pytest
import redis.connection
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.db import connection
from psycopg import pq
from rest_framework.test import APIClient

from devtools import demo
from notify import breaker
from notify.models import Device, Recipient

pytestmark = pytest.mark.django_db(transaction=True)

#: Round trips of one send with an idempotency key, whatever its channels. PostgreSQL: the
#: connection's health check (CONN_HEALTH_CHECKS: once per request on a reused connection) and
#: the insert (one autocommit statement; it was BEGIN, INSERT, COMMIT; a look-up of the
#: idempotency key before it is made only when the insert finds the key taken).
#: Redis: the API key, the API rate limit (django-ratelimit: add, then incr), and the
#: recipient's profile, the template and the app's categories in one MGET (they were three GETs);
#: and once per half second per process, every breaker of the send's channels in one more MGET.
POSTGRESQL = 2
REDIS = 4
#: A frontend message after which libpq waits for the server's answer.
_WAITS = re.compile(r"^F\t\d+\t(Sync|Query)\b", re.MULTILINE)


@dataclass
class Counted:
    postgresql: int = 0
    redis: int = 0


@contextlib.contextmanager
def round_trips():
    """Count the round trips made inside the block (yields a :class:`Counted`, filled at exit)."""
    counted = Counted()
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        counted.redis += 1
        return original(self, command, check_health)

    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        redis.connection.AbstractConnection.send_packed_command = counting
        # As at the start of a request in production (Django's test client skips the
        # request_started handler that resets it).
        connection.health_check_done = False
        try:
            yield counted
        finally:
            redis.connection.AbstractConnection.send_packed_command = original
            pgconn.untrace()
            os.fsync(trace.fileno())
            trace.seek(0)
            counted.postgresql = len(_WAITS.findall(trace.read()))


def _web_subscription() -> dict:
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return {"endpoint": f"https://push.example.com/{secrets.token_hex(8)}",
            "keys": {"p256dh": b64(key), "auth": b64(secrets.token_bytes(16))}}


@pytest.fixture
def client_and_recipients(_fresh_cache, _queues_declared):
    app, key = demo.create_app("round-trips")
    everywhere = Recipient.objects.create(app=app, external_id="everywhere", email="a@example.com",
                                          phone="+821012345678", locale="ko")
    for platform, token in (("ios", secrets.token_hex(32)), ("android", demo.fcm_token())):
        Device.objects.create(app=app, recipient=everywhere, platform=platform, token=token)
    subscription = _web_subscription()
    Device.objects.create(app=app, recipient=everywhere, platform="web", token=subscription["endpoint"],
                          subscription=subscription)
    Recipient.objects.create(app=app, external_id="email-only", email="b@example.com", locale="ko")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def _send(client, recipient: str, status: str = "queued", **extra) -> list[str]:
    """POST a send to ``recipient``; the sorted channels of its deliveries in ``status``."""
    response = client.post("/api/v1/notifications", {
        "recipient": recipient, "template": "order-shipped", "data": {"name": "지우", "order": "A-1"},
        "event_id": secrets.token_hex(8), **extra}, format="json")
    assert response.status_code == 202, response.content
    return sorted(d["channel"] for d in response.json()["deliveries"] if d["status"] == status)


@pytest.fixture
def breakers_looked_at_now(monkeypatch):
    """Every breaker's cached look fresh for the test (a process re-reads them every half second,
    notify.breaker; a slow machine would otherwise cross that line between two sends)."""
    monkeypatch.setattr(breaker, "_LOCAL_TTL", 3600.0)


def test_a_send_costs_the_same_round_trips_for_one_channel_and_five(client_and_recipients, breakers_looked_at_now):
    client = client_and_recipients
    # Warm: the caches filled, the statements prepared, the breakers' state read.
    assert _send(client, "everywhere") == ["apns", "email", "fcm", "sms", "webpush"]
    assert _send(client, "email-only") == ["email"]

    with round_trips() as five:
        assert _send(client, "everywhere") == ["apns", "email", "fcm", "sms", "webpush"]
    with round_trips() as one:
        assert _send(client, "email-only") == ["email"]

    assert (five.postgresql, five.redis) == (POSTGRESQL, REDIS)
    assert (one.postgresql, one.redis) == (POSTGRESQL, REDIS)


def test_breakers_looked_at_again_cost_one_round_trip_for_every_channel(client_and_recipients,
                                                                        breakers_looked_at_now):
    """Once per half second a process reads its breakers again: every provider of the send's
    channels in one MGET, not one per channel or per provider."""
    client = client_and_recipients
    assert _send(client, "everywhere") == ["apns", "email", "fcm", "sms", "webpush"]
    assert _send(client, "email-only") == ["email"]

    breaker._local.clear()
    with round_trips() as five:
        assert _send(client, "everywhere") == ["apns", "email", "fcm", "sms", "webpush"]
    breaker._local.clear()
    with round_trips() as one:
        assert _send(client, "email-only") == ["email"]

    assert (five.postgresql, five.redis) == (POSTGRESQL, REDIS + 1)
    assert (one.postgresql, one.redis) == (POSTGRESQL, REDIS + 1)


def test_a_scheduled_send_reads_no_breaker(client_and_recipients, breakers_looked_at_now):
    """A send not due yet is queued by the dispatcher at its time whatever the providers' state
    now, so it pays no breaker read even when the process's look has expired."""
    client = client_and_recipients
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    assert _send(client, "everywhere", "scheduled", send_at=later) == ["apns", "email", "fcm", "sms", "webpush"]

    breaker._local.clear()
    with round_trips() as scheduled:
        assert _send(client, "everywhere", "scheduled", send_at=later) == ["apns", "email", "fcm", "sms", "webpush"]

    assert (scheduled.postgresql, scheduled.redis) == (POSTGRESQL, REDIS)


def test_the_counter_sees_every_round_trip():
    """The counter itself: two statements in a transaction after the health check are five
    PostgreSQL round trips; a command and a pipeline are two Redis round trips."""
    from django.db import transaction
    from django_redis import get_redis_connection

    get_redis_connection("default").ping()
    connection.ensure_connection()
    with round_trips() as counted:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.execute("SELECT 2")
        get_redis_connection("default").get("x")
        pipe = get_redis_connection("default").pipeline()
        pipe.get("x").get("y")
        pipe.execute()
    assert counted.redis == 2
    # The health check, BEGIN, the two statements and COMMIT.
    assert counted.postgresql == 5

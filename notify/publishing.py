"""Getting deliveries onto their channel's queue: a transactional outbox, its relay, and the
dispatcher that puts due retries and taken-over sends back into the outbox.

*Outbox.* Nothing on the API path talks to RabbitMQ. A delivery that is ``queued`` with
``published_at`` NULL is in the outbox; the transaction that writes it also notifies
``notify_outbox`` (:func:`wake_relay`), which PostgreSQL delivers only if it commits.

*Relay* (:func:`relay_once`, run in a loop by ``manage.py relay``): takes outbox rows with
``FOR UPDATE SKIP LOCKED``, publishes them as tasks of up to ``NOTIFY_TASK_BATCH`` deliveries of
one channel with publisher confirms, and marks them published in the same transaction. A broker
failure rolls the transaction back and the rows stay in the outbox; a relay that dies between
publish and commit publishes them again later, which is harmless because the worker claims each
delivery with a conditional UPDATE before sending. Several relays may run at once.

*Dispatcher* (:func:`dispatch_due`, celery beat every second): moves retries whose delay is over
and sends whose worker died back into the outbox, and is the relay's backstop.

The database is the source of truth and RabbitMQ only carries wake-ups.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import defaultdict
from typing import Iterable, Iterator

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from channels.registry import CHANNELS

from . import breaker
from .sql import prepared_cursor

log = logging.getLogger(__name__)

#: The PostgreSQL LISTEN/NOTIFY channel the relay waits on.
OUTBOX_EVENT = "notify_outbox"

_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
#: Seconds the relay waits for RabbitMQ to confirm a publish (a broker under a memory or disk
#: alarm blocks publishers); then the round fails and its rows stay in the outbox.
CONFIRM_TIMEOUT = 10
#: The relay holds its rows' locks while it publishes, and a worker that got a message first
#: waits for them in its claim: PostgreSQL ends a relay transaction stuck longer than this.
_RELAY_TX_LIMIT = "SET LOCAL idle_in_transaction_session_timeout = '30s'"


def task_name(channel: str) -> str:
    """The Celery task of a channel; celeryconfig routes it to the queue of the same name."""
    return f"notify.deliver.{channel}"


def wake_relay(cursor) -> None:
    """Ask PostgreSQL to wake the outbox relay when the current transaction commits (a rolled
    back transaction wakes nobody; several notifies in one transaction arrive as one). The API's
    insert does the same inside its statement (notify.sending)."""
    cursor.execute("SELECT pg_notify(%s, '')", [OUTBOX_EVENT])


def task_batches(items: Iterable[tuple[object, str]], size: int | None = None) -> Iterator[tuple[str, list[str]]]:
    """Group ``(delivery id, channel)`` pairs into ``(channel, [delivery id, ...])`` of at most
    ``size`` ids (default ``NOTIFY_TASK_BATCH``), keeping the given order within a channel."""
    size = size or settings.NOTIFY_TASK_BATCH
    by_channel: dict[str, list[str]] = defaultdict(list)
    for delivery_id, channel in items:
        by_channel[channel].append(str(delivery_id))
    for channel, ids in by_channel.items():
        iterator = iter(ids)
        while chunk := list(itertools.islice(iterator, size)):
            yield channel, chunk


def publish_tasks(items: Iterable[tuple[object, str]]) -> int:
    """Publish ``(delivery id, channel)`` pairs as batch tasks; returns how many tasks.

    Raises:
        kombu/amqp errors once the short retry policy is spent: the caller's transaction must
        roll back so that the rows stay unpublished.
    """
    from .celery import app

    published = 0
    with app.producer_or_acquire() as producer:
        for channel, ids in task_batches(items):
            # argsrepr given: Celery would otherwise saferepr() the arguments of every message.
            app.send_task(task_name(channel), args=[ids], producer=producer,
                          argsrepr=f"[{len(ids)} deliveries]", kwargsrepr="{}",
                          retry=True, retry_policy=_PUBLISH_RETRY, confirm_timeout=CONFIRM_TIMEOUT)
            published += 1
    return published


_TAKE_OUTBOX_SQL = """
WITH batch AS (
    SELECT id FROM notify_delivery
    WHERE status = 'queued' AND published_at IS NULL
      AND updated_at <= now() - make_interval(secs => %(older_than)s::float8)
    ORDER BY created_at LIMIT %(limit)s::int FOR UPDATE SKIP LOCKED
)
UPDATE notify_delivery d SET published_at = now() FROM batch WHERE d.id = batch.id
RETURNING d.id, d.channel
"""


def relay_once(limit: int = 1000, older_than: float = 0) -> int:
    """Publish up to ``limit`` deliveries from the outbox; returns how many.

    Args:
        older_than: only rows untouched for this many seconds (the dispatcher's backstop leaves
            fresh rows to the relay).
    Raises:
        broker errors (see :func:`publish_tasks`); nothing is marked published then.
    """
    with transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute(_TAKE_OUTBOX_SQL, {"older_than": older_than, "limit": limit})
        rows = cursor.fetchall()
        if rows:
            cursor.execute(_RELAY_TX_LIMIT, prepare=False)
            publish_tasks(rows)
    return len(rows)


def hand_back(delivery_ids: list[str]) -> int:
    """Put still-queued deliveries of a task back into the outbox (a worker that ran out of its
    batch's time budget); returns how many. Rows another worker already took are left alone."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE notify_delivery SET published_at = NULL, updated_at = now() "
                       "WHERE id = ANY(%s::uuid[]) AND status = 'queued'", [delivery_ids])
        count = cursor.rowcount
        if count:
            wake_relay(cursor)
    return count


_MOVE_DUE_SQL = """
WITH due AS (
    SELECT id, status AS old_status FROM notify_delivery
    WHERE {where}
    ORDER BY next_attempt_at NULLS FIRST
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE notify_delivery d SET status = 'queued', published_at = NULL, updated_at = now(),
           lease_until = NULL, unknown_outcome = d.unknown_outcome OR due.old_status = 'sending'
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.attempts, due.old_status
), logged AS (
    INSERT INTO notify_deliverylog (delivery_id, at, from_status, to_status, attempt, reason)
    SELECT id, now(), old_status, 'queued', attempts,
           CASE WHEN old_status = 'sending' THEN 'lease_expired' ELSE 'retry_due' END FROM moved
)
SELECT count(*) FROM moved
"""
#: Due retries of channels whose breaker is closed, and sends whose worker died.
_DUE_SQL = _MOVE_DUE_SQL.format(where="""
    (status = 'retrying' AND next_attempt_at <= now() AND NOT channel = ANY(%(held)s))
    OR (status = 'sending' AND lease_until < now())""")
#: One due retry of a half-open channel: the dispatcher's probe.
_PROBE_SQL = _MOVE_DUE_SQL.format(where="status = 'retrying' AND next_attempt_at <= now() AND channel = %(channel)s")

#: Published long ago and never claimed: the broker lost the message.
_STALE_SQL = """
UPDATE notify_delivery SET published_at = NULL WHERE id IN (
    SELECT id FROM notify_delivery
    WHERE status = 'queued' AND published_at < now() - make_interval(secs => %s)
    LIMIT %s FOR UPDATE SKIP LOCKED)
"""


def dispatch_due(batch: int = 1000) -> int:
    """Put every delivery that is due and not on a queue back into the outbox, and publish what
    the relay has left there; returns how many rows it moved or published.

    - ``retrying`` whose ``next_attempt_at`` passed → ``queued``, unless the channel's circuit
      breaker is tripped (notify.breaker): then one per call while it is half-open (the probe),
      and the rest once a probe succeeded;
    - ``sending`` whose lease ran out (the worker died mid-send) → ``queued`` with
      ``unknown_outcome`` set, so the worker applies the channel's unknown-outcome policy;
    - ``queued`` published more than ``NOTIFY_REPUBLISH_STALE_AFTER`` seconds ago and never
      claimed (the broker lost the message) → unpublished;
    - ``queued`` and unpublished for ``NOTIFY_REPUBLISH_AFTER`` seconds (no relay running, or
      the broker was down) → published here.

    Safe to run in several processes at once (``FOR UPDATE SKIP LOCKED``).
    """
    moved = 0
    with transaction.atomic(), connection.cursor() as cursor:
        held = breaker.tripped_channels(CHANNELS)
        cursor.execute(_DUE_SQL, {"held": held, "limit": batch})
        moved += cursor.fetchone()[0]
        for channel in held:
            if breaker.state(channel) == breaker.HALF_OPEN:
                cursor.execute(_PROBE_SQL, {"channel": channel, "limit": 1})
                moved += cursor.fetchone()[0]
        cursor.execute(_STALE_SQL, [settings.NOTIFY_REPUBLISH_STALE_AFTER, batch])
        moved += cursor.rowcount
        if moved:
            log.info("moved %d due deliveries to the outbox", moved)
            wake_relay(cursor)
    try:
        published = relay_once(batch, older_than=settings.NOTIFY_REPUBLISH_AFTER)
    except Exception:  # noqa: BLE001 - broker down: the rows wait in the outbox
        log.exception("publishing the outbox's backlog failed; retrying in the next round")
        published = 0
    if published:
        log.warning("published %d deliveries no relay had taken (is `manage.py relay` running?)", published)
    return moved + published


def forget_idempotency_keys() -> int:
    """Release idempotency keys older than ``NOTIFY_IDEMPOTENCY_RETENTION``; returns the count."""
    from .models import Notification

    cutoff = timezone.now() - dt.timedelta(seconds=settings.NOTIFY_IDEMPOTENCY_RETENTION)
    return Notification.objects.filter(idempotency_key__isnull=False, created_at__lt=cutoff).update(idempotency_key=None)

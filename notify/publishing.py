"""Publishing delivery tasks to their channel's queue, and the dispatcher that re-publishes what
the queue may not hold: deliveries whose publish failed (broker down at accept time), retries
whose delay is over, and sends whose worker died holding them.

The database is the source of truth and RabbitMQ only carries wake-ups: publishing the same
delivery twice is harmless because the worker claims it with a conditional UPDATE first.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from channels.registry import CHANNELS

from . import breaker
from .models import Delivery

log = logging.getLogger(__name__)

_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


def task_name(channel: str) -> str:
    """The Celery task of a channel; celeryconfig routes it to the queue of the same name."""
    return f"notify.deliver.{channel}"


def publish_deliveries(items: Iterable[tuple[uuid.UUID, str]]) -> int:
    """Publish one task per ``(delivery id, channel)``; returns how many were published.

    Callers have already set ``published_at`` (optimistically, in the same write that made the
    rows due), so success costs no query. Never raises for a broker failure: what could not be
    published gets ``published_at`` NULL again and the dispatcher publishes it later.
    """
    from .celery import app

    items = list(items)
    published = 0
    try:
        with app.producer_or_acquire() as producer:
            for delivery_id, channel in items:
                # argsrepr given: Celery would otherwise saferepr() the arguments of every message.
                app.send_task(task_name(channel), args=[str(delivery_id)], producer=producer,
                              argsrepr=f"['{delivery_id}']", kwargsrepr="{}",
                              retry=True, retry_policy=_PUBLISH_RETRY)
                published += 1
    except Exception:  # noqa: BLE001 - any broker trouble: leave the rest to the dispatcher
        log.exception("publish failed after %d of %d deliveries; the dispatcher will publish the rest",
                      published, len(items))
        Delivery.objects.filter(id__in=[i for i, _ in items[published:]]).update(
            published_at=None, updated_at=timezone.now())
    return published


_MOVE_DUE_SQL = """
WITH due AS (
    SELECT id, status AS old_status FROM notify_delivery
    WHERE {where}
    ORDER BY next_attempt_at NULLS FIRST
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE notify_delivery d SET status = 'queued', published_at = now(), updated_at = now(),
           lease_until = NULL, unknown_outcome = d.unknown_outcome OR due.old_status = 'sending'
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.channel, d.attempts, due.old_status
), logged AS (
    INSERT INTO notify_deliverylog (delivery_id, at, from_status, to_status, attempt, reason)
    SELECT id, now(), old_status, 'queued', attempts,
           CASE WHEN old_status = 'sending' THEN 'lease_expired' ELSE 'retry_due' END FROM moved
)
SELECT id, channel FROM moved
"""
#: Due retries of channels whose breaker is closed, and sends whose worker died.
_DUE_SQL = _MOVE_DUE_SQL.format(where="""
    (status = 'retrying' AND next_attempt_at <= now() AND NOT channel = ANY(%(held)s))
    OR (status = 'sending' AND lease_until < now())""")
#: One due retry of a half-open channel: the dispatcher's probe.
_PROBE_SQL = _MOVE_DUE_SQL.format(where="status = 'retrying' AND next_attempt_at <= now() AND channel = %(channel)s")

_UNPUBLISHED_SQL = """
UPDATE notify_delivery SET published_at = now() WHERE id IN (
    SELECT id FROM notify_delivery
    WHERE status = 'queued' AND (
          (published_at IS NULL AND updated_at < now() - make_interval(secs => %s))
       OR (published_at < now() - make_interval(secs => %s)))
    ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, channel
"""


def dispatch_due(batch: int = 1000) -> int:
    """Publish every delivery that is due and not on a queue.

    - ``retrying`` whose ``next_attempt_at`` passed → ``queued`` and published, unless the
      channel's circuit breaker is tripped (notify.breaker): then one per call while it is
      half-open (the probe), and the rest once a probe succeeded;
    - ``sending`` whose lease ran out (the worker died mid-send) → ``queued`` with
      ``unknown_outcome`` set, so the worker applies the channel's unknown-outcome policy;
    - ``queued`` whose publish failed (broker down at accept time) or published long ago and
      never claimed (message lost in the broker, or the API died between commit and publish)
      → published again.

    Safe to run in several processes at once (``FOR UPDATE SKIP LOCKED``). Returns the count.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        held = breaker.tripped_channels(CHANNELS)
        cursor.execute(_DUE_SQL, {"held": held, "limit": batch})
        due = [(row[0], row[1]) for row in cursor.fetchall()]
        for channel in held:
            if breaker.state(channel) == breaker.HALF_OPEN:
                cursor.execute(_PROBE_SQL, {"channel": channel, "limit": 1})
                due += [(row[0], row[1]) for row in cursor.fetchall()]
        cursor.execute(_UNPUBLISHED_SQL, [settings.NOTIFY_REPUBLISH_AFTER, settings.NOTIFY_REPUBLISH_STALE_AFTER, batch])
        due += [(row[0], row[1]) for row in cursor.fetchall()]
    if due:
        log.info("dispatching %d due deliveries", len(due))
        publish_deliveries(due)
    return len(due)


def forget_idempotency_keys() -> int:
    """Release idempotency keys older than ``NOTIFY_IDEMPOTENCY_RETENTION``; returns the count."""
    from .models import Notification

    cutoff = timezone.now() - dt.timedelta(seconds=settings.NOTIFY_IDEMPOTENCY_RETENTION)
    return Notification.objects.filter(idempotency_key__isnull=False, created_at__lt=cutoff).update(idempotency_key=None)

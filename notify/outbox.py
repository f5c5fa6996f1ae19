"""Outbox: getting committed deliveries onto their channel's queue.

Nothing on the API path talks to RabbitMQ. A delivery that is ``queued`` with ``published_at``
NULL is in the outbox; the transaction that writes it also notifies ``notify_outbox``
(notify.store), which PostgreSQL delivers only if it commits.

The relay (:class:`Relay`, ``manage.py relay``) waits for that notification, takes outbox rows
with ``FOR UPDATE SKIP LOCKED``, publishes them as tasks of up to ``NOTIFY_TASK_BATCH``
deliveries of one channel with publisher confirms, and marks them published in the same
transaction. A broker failure rolls the transaction back and the rows stay in the outbox; a relay
that dies between publish and commit publishes them again later, which is harmless because the
worker claims each delivery with a conditional UPDATE before sending. Several relays may run at
once; the dispatcher (notify.maintenance) is their backstop.

Rounds are paced only under load: after a round that published at least
``NOTIFY_RELAY_BUSY_ROWS`` deliveries, the next starts ``NOTIFY_RELAY_INTERVAL_MS`` after it, so
what is committed meanwhile goes out together and the per-message cost of Celery and RabbitMQ is
paid once per batch. Light traffic is published at once.

The database is the source of truth and RabbitMQ only carries wake-ups.
"""

from __future__ import annotations

import itertools
import logging
import signal
import time
from collections import defaultdict
from typing import Iterable, Iterator

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction

from . import metrics, store
from .queues import task_name

log = logging.getLogger(__name__)

_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
#: Seconds the relay waits for RabbitMQ to confirm a publish (a broker under a memory or disk
#: alarm blocks publishers); then the round fails and its rows stay in the outbox.
CONFIRM_TIMEOUT = 10
#: Seconds between checks of the outbox when no notification comes (a NOTIFY sent while the
#: relay was reconnecting is otherwise missed).
IDLE_CHECK = 1.0
ROUND_LIMIT = 1000


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
                          retry=True, retry_policy=_PUBLISH_RETRY, confirm_timeout=CONFIRM_TIMEOUT,
                          # The AMQP timestamp: RabbitMQ reports the head message's, which is the
                          # queue's oldest-message age in notify.metrics.
                          timestamp=int(time.time()))
            published += 1
    return published


def relay_once(limit: int = ROUND_LIMIT, older_than: float = 0) -> int:
    """Publish up to ``limit`` deliveries from the outbox; returns how many.

    Args:
        older_than: only rows untouched for this many seconds (the dispatcher's backstop leaves
            fresh rows to the relay).
    Raises:
        broker errors (see :func:`publish_tasks`); nothing is marked published then.
    """
    with transaction.atomic(), store.prepared_cursor() as cursor:
        rows = store.take_outbox(cursor, limit, older_than)
        if rows:
            publish_tasks(rows)
    return len(rows)


class Relay:
    """One relay process. ``run()`` loops until ``stop()`` (or SIGTERM/SIGINT through
    :meth:`install_signal_handlers`)."""

    def __init__(self, interval: float | None = None, busy_rows: int | None = None):
        self.interval = settings.NOTIFY_RELAY_INTERVAL_MS / 1000 if interval is None else interval
        self.busy_rows = settings.NOTIFY_RELAY_BUSY_ROWS if busy_rows is None else busy_rows
        self.stopping = False
        self._listening = False

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def stop(self) -> None:
        self.stopping = True

    def _listen(self) -> None:
        if not self._listening:
            connection.ensure_connection()
            with connection.wrap_database_errors:
                connection.connection.execute(f"LISTEN {store.OUTBOX_EVENT}")
            self._listening = True

    def _wait(self, timeout: float) -> None:
        """Block until a notification arrives or ``timeout`` seconds pass; drain the rest."""
        pg = connection.connection
        with connection.wrap_database_errors:  # psycopg's errors as Django's, for run()
            for _ in pg.notifies(timeout=timeout, stop_after=1):
                pass
            for _ in pg.notifies(timeout=0):
                pass

    def run(self) -> None:
        log.info("outbox relay started (rounds %.0f ms apart after %d or more deliveries)",
                 self.interval * 1000, self.busy_rows)
        last_round = 0.0
        published = 0
        backoff = 0.0
        while not self.stopping:
            try:
                self._listen()
                if published >= self.busy_rows:
                    pause = last_round + self.interval - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                last_round = time.monotonic()
                published = relay_once(ROUND_LIMIT)
                metrics.relay_heartbeat()
                backoff = 0.0
                if published >= ROUND_LIMIT:
                    continue  # a backlog: the next round at once (after the interval)
                self._wait(IDLE_CHECK)
            except Exception as exc:  # noqa: BLE001 - database or broker trouble: rows stay in the outbox
                if isinstance(exc, (OperationalError, InterfaceError)):
                    # Database gone (restart, failover): reconnect and LISTEN again.
                    log.warning("outbox relay lost the database; reconnecting", exc_info=True)
                    self._listening = False
                    close_old_connections()
                    connection.close()
                else:
                    log.warning("outbox relay could not publish; trying again", exc_info=True)
                backoff = min(max(backoff * 2, 0.1), 2.0)
                time.sleep(backoff)
        log.info("outbox relay stopped")

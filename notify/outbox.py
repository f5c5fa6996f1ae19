"""Outbox: getting committed deliveries onto their channel's queue.

Nothing on the API path talks to RabbitMQ. A delivery that is ``queued`` with ``published_at``
NULL is in the outbox; the transaction that writes it also notifies ``notify_outbox``
(notify.store), which PostgreSQL delivers only if it commits.

A broadcast's fan-out writes its deliveries already marked published, each batch's with one
``notify_outboxbatch`` row per channel holding their ids (notify.models.OutboxBatch), so a
delivery row is written once: the relay deletes such a row where it would mark single rows.

The relay (:class:`Relay`, ``manage.py relay``) waits for that notification, takes outbox rows
(and batch rows) with ``FOR UPDATE SKIP LOCKED``, publishes them as tasks of up to
``NOTIFY_TASK_BATCH`` deliveries of one channel (``NOTIFY_BROADCAST_TASK_BATCH`` for a batch
row's) with publisher confirms, awaited together at the end of the round, and marks them
published (deletes the batch rows) in the same transaction. A broker failure rolls the
transaction back and the rows stay in the outbox; a relay
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
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from typing import Iterable, Iterator

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction

from . import metrics, store
from .queues import task_name

log = logging.getLogger(__name__)

#: Seconds the relay waits for RabbitMQ to confirm a publish (a broker under a memory or disk
#: alarm blocks publishers); then the round fails and its rows stay in the outbox.
CONFIRM_TIMEOUT = 10
#: Seconds between checks of the outbox when no notification comes (a NOTIFY sent while the
#: relay was reconnecting is otherwise missed).
IDLE_CHECK = 1.0
ROUND_LIMIT = 1000
#: Batch rows (notify.models.OutboxBatch) a round takes besides its ``limit`` of single rows.
BATCH_ROWS_PER_ROUND = 4


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


class PublishRefused(Exception):
    """RabbitMQ refused (basic.nack) or did not confirm in time a message of a round."""


class _Publisher:
    """One broker connection per process and thread, its channel in publisher-confirm mode,
    for :func:`publish_tasks`.

    A round's messages are published back to back and their confirms awaited together
    (RabbitMQ's batched confirms, https://www.rabbitmq.com/docs/confirms#publisher-confirms).
    Waiting for each message's confirm before the next (the transport's ``confirm_publish``)
    cost a round trip per task. Confirms may come out of order when a round's messages go to
    several queues (one ``basic.ack multiple`` covers every tag up to its own, a single one only
    its own), so the tags still unconfirmed are kept as a set. Any error discards the
    publisher, and the next round opens a new connection."""

    def __init__(self, app):
        self.app = app
        self.pid = os.getpid()
        self.connection = app.connection_for_write(transport_options={"confirm_publish": False})
        try:
            # One attempt per listed node, without waiting: a broker that is down fails the
            # round at once (its rows stay in the outbox, the relay tries again with back-off).
            self.connection.ensure_connection(max_retries=max(1, len(self.connection.alt)), interval_start=0,
                                              interval_step=0, interval_max=0)
            channel = self.connection.default_channel
            channel.confirm_select()
            channel.events["basic_ack"].add(self._settle)
            channel.events["basic_nack"].add(self._nacked)
        except Exception:
            self.close()
            raise
        self.producer = app.amqp.Producer(channel, auto_declare=False)
        self.last_tag = 0  # the channel numbers its messages 1, 2, … (the delivery tags)
        self.unconfirmed: set[int] = set()
        self.refused = False

    def _settle(self, tag: int, multiple: bool) -> None:
        """A confirm (``basic.ack``) of ``tag``, or of every tag up to it when ``multiple``."""
        if multiple:
            self.unconfirmed = {t for t in self.unconfirmed if t > tag}
        else:
            self.unconfirmed.discard(tag)

    def _nacked(self, tag: int, multiple: bool) -> None:
        self.refused = True
        self._settle(tag, multiple)

    def publish(self, name: str, ids: list[str]) -> None:
        # argsrepr given: Celery would otherwise saferepr() the arguments of every message.
        self.app.send_task(name, args=[ids], producer=self.producer, argsrepr=f"[{len(ids)} deliveries]",
                           kwargsrepr="{}", retry=False,
                           # The AMQP timestamp: RabbitMQ reports the head message's, which is the
                           # queue's oldest-message age in notify.metrics.
                           timestamp=int(time.time()))
        self.last_tag += 1
        self.unconfirmed.add(self.last_tag)

    def wait_confirms(self, timeout: float) -> None:
        """Block until every message published so far is confirmed.

        Raises:
            PublishRefused: a message was refused, or ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout
        while self.unconfirmed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PublishRefused(f"{len(self.unconfirmed)} messages unconfirmed after {timeout} s")
            try:
                self.connection.drain_events(timeout=left)
            except socket.timeout:
                pass
        if self.refused:
            raise PublishRefused("RabbitMQ refused a message (basic.nack)")

    def close(self) -> None:
        try:
            self.connection.release()
        except Exception:  # noqa: BLE001 - already broken: nothing left to release
            pass


_publishers = threading.local()


def publish_tasks(tasks: Iterable[tuple[str, list[str]]]) -> int:
    """Publish ``(channel, [delivery id, ...])`` tasks (see :func:`task_batches`), and wait
    until RabbitMQ has confirmed every one; returns how many tasks.

    A connection kept from an earlier round may have died meanwhile (a broker restart, a
    firewall dropping an idle connection): then the round is published once more on a new
    connection before it fails.

    Raises:
        kombu/amqp errors, :class:`PublishRefused`: the caller's transaction must roll back so
        that the rows stay unpublished (some tasks may have been published: their deliveries'
        claims make the second message harmless).
    """
    from .celery import app

    tasks = list(tasks)
    while True:
        publisher = getattr(_publishers, "current", None)
        kept = publisher is not None and publisher.app is app and publisher.pid == os.getpid()
        if not kept:
            publisher = _publishers.current = _Publisher(app)
        try:
            for channel, ids in tasks:
                publisher.publish(task_name(channel), ids)
            publisher.wait_confirms(CONFIRM_TIMEOUT)
            return len(tasks)
        except Exception as exc:
            _publishers.current = None
            publisher.close()
            if not kept or isinstance(exc, PublishRefused):
                raise
            log.info("the relay's broker connection had closed; publishing on a new one")


def relay_round(limit: int = ROUND_LIMIT, older_than: float = 0) -> tuple[int, bool]:
    """Publish up to ``limit`` deliveries from the outbox, and the deliveries of up to
    :data:`BATCH_ROWS_PER_ROUND` of its batch rows; returns how many deliveries, and whether
    more may wait (either limit reached).

    Args:
        older_than: only rows untouched for this many seconds (the dispatcher's backstop leaves
            fresh rows to the relay).
    Raises:
        broker errors (see :func:`publish_tasks`); nothing is marked published then.
    """
    with transaction.atomic(), store.prepared_cursor() as cursor:
        rows = store.take_outbox(cursor, limit, older_than)
        tasks = list(task_batches(rows))
        count = len(rows)
        # A broadcast's batch rows: up to a few thousand deliveries each, so only a few a round.
        batches = store.take_outbox_batches(cursor, BATCH_ROWS_PER_ROUND, older_than)
        for channel, ids in batches:
            tasks.extend(task_batches(((i, channel) for i in ids), settings.NOTIFY_BROADCAST_TASK_BATCH))
            count += len(ids)
        if tasks:
            publish_tasks(tasks)
    return count, len(rows) >= limit or len(batches) >= BATCH_ROWS_PER_ROUND


def relay_once(limit: int = ROUND_LIMIT, older_than: float = 0) -> int:
    """:func:`relay_round`'s count of deliveries published."""
    return relay_round(limit, older_than)[0]


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
                published, more = relay_round(ROUND_LIMIT)
                metrics.relay_heartbeat()
                backoff = 0.0
                if more:
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

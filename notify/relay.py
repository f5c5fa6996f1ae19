"""The outbox relay's loop (``manage.py relay``): wait for ``NOTIFY notify_outbox``, publish the
outbox (notify.publishing.relay_once), repeat.

Rounds are paced only under load: after a round that published at least
``NOTIFY_RELAY_BUSY_ROWS`` deliveries, the next starts ``NOTIFY_RELAY_INTERVAL_MS`` after it, so
what is committed meanwhile goes out together, each task carries several deliveries of its
channel, and the per-message cost of Celery and RabbitMQ is paid once per batch. The price is at
most one interval of added latency while the system is busy. Light traffic is published at once
(a dispatcher probe or a burst on one channel does not delay the next notification of another).
"""

from __future__ import annotations

import logging
import signal
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from .publishing import OUTBOX_EVENT, relay_once

log = logging.getLogger(__name__)

#: Seconds between checks of the outbox when no notification comes (a NOTIFY sent while the
#: relay was reconnecting is otherwise missed).
IDLE_CHECK = 1.0
ROUND_LIMIT = 1000


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
                connection.connection.execute(f"LISTEN {OUTBOX_EVENT}")
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

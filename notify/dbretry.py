"""Waiting out a database outage (restart, failover) where giving up would lose information."""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connection

log = logging.getLogger(__name__)
T = TypeVar("T")


def through_outage(what: str, patience: float, fn: Callable[[], T]) -> T:
    """Return ``fn()``, retrying once a second on a fresh connection while the database is
    unreachable, for up to ``patience`` seconds; then the OperationalError / InterfaceError
    propagates. ``what`` names the work in the warning logged per retry."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return fn()
        except (OperationalError, InterfaceError):
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable while %s; retrying", what)
            close_old_connections()
            connection.close()
            time.sleep(1)

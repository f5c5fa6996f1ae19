"""Prepared statements for the hot paths' hand-written SQL.

Django's psycopg backend binds parameters on the client and never prepares, so PostgreSQL parses
and plans every statement again. The few statements that run once or twice per delivery (the
API's insert, the worker's claim and outcome) go through :func:`prepared_cursor` instead, which
lets PostgreSQL keep their plans per connection (psycopg's ``prepare=True``, which needs the
connection's ``prepare_threshold`` set: settings.DATABASES; Django's own cursors bind on the client
and never prepare). Connections live for ``CONN_MAX_AGE``. Behind a transaction-pooling PgBouncer older than 1.21, set
``NOTIFY_DB_PREPARE=0``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from django.conf import settings
from django.db import connection


class _PreparingCursor(psycopg.Cursor):
    def execute(self, query, params=None, **kwargs):
        kwargs.setdefault("prepare", True if settings.NOTIFY_DB_PREPARE else False)
        return super().execute(query, params, **kwargs)


@contextmanager
def prepared_cursor() -> Iterator[psycopg.Cursor]:
    """A server-side-binding psycopg cursor on Django's connection (so in the same transaction)
    whose statements are prepared, and whose errors are raised as Django's
    (``django.db.IntegrityError``, ``OperationalError``, ...)."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors, _PreparingCursor(connection.connection) as cursor:
        yield cursor

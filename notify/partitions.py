"""Partitioned history: ``notify_delivery`` by UTC day of ``created_at``, ``notify_deliverylog`` by
UTC day of ``at`` (PostgreSQL declarative partitioning), and its retention by dropping whole days.

Each table has one partition per UTC day (``notify_delivery_p20261205``), a ``…_default``
partition that takes a row no day partition covers (maintenance was late, a backdated row), and,
on an installation converted from the unpartitioned tables, a ``…_legacy`` partition holding
every row written before the conversion's cutover (``FROM (MINVALUE) TO (cutover)``).

The primary keys are ``(id, created_at)`` and ``(id, at)``: a partitioned table's unique
constraints must hold its partition key. Django keeps ``id`` as the models' primary key (it
never relies on the database's). ``delivery(id)`` is then no longer unique by itself, so the log's
and the events' foreign keys to it exist in Django only (``db_constraint=False``; Django's
``on_delete`` still cascades).

:func:`convert` turns an unpartitioned table into this shape without downtime (migration
0014); :func:`maintain` (beat, hourly) creates the days ahead and drops the days past
``NOTIFY_HISTORY_RETENTION_DAYS``. docs/scaling.md "Partitioned history" tells the whole story.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
from typing import Any, Iterable

from django.db import connection as default_connection, transaction

log = logging.getLogger(__name__)

#: The partitioned tables and their partition key.
TABLES = {"notify_delivery": "created_at", "notify_deliverylog": "at"}
#: How long a partition's DDL waits for a lock before it gives up (the next run tries again).
#: Every look-up of a delivery by id reads every partition, so a DDL statement queued behind a
#: long transaction would hold up the claims queued behind it: better to fail fast.
LOCK_TIMEOUT = "2s"
#: Days from the conversion to its cutover: rows written until then go to the legacy partition
#: (a CHECK promises the rows are below the cutover; it must stay in the future until the swap).
CUTOVER_DAYS = 2
#: Deliveries of a dropped partition whose events and notifications one statement deletes.
DELETE_SLICE = 5000

_UTC = dt.timezone.utc
_BOUND = re.compile(r"FROM \((?P<lo>MINVALUE|'[^']*')\) TO \((?P<hi>MAXVALUE|'[^']*')\)")


@dataclasses.dataclass(frozen=True)
class Partition:
    """One partition of a partitioned table: ``lower``/``upper`` its range (None: MINVALUE /
    MAXVALUE), both None and ``default`` True for the DEFAULT partition."""

    name: str
    lower: dt.datetime | None
    upper: dt.datetime | None
    default: bool = False


def day_name(table: str, day: dt.date) -> str:
    """The name of ``table``'s partition of the UTC day ``day``."""
    return f"{table}_p{day:%Y%m%d}"


def midnight(day: dt.date) -> dt.datetime:
    """The UTC instant ``day`` begins."""
    return dt.datetime.combine(day, dt.time(), tzinfo=_UTC)


def _literal(instant: dt.datetime) -> str:
    return f"'{instant.astimezone(_UTC).isoformat()}'"


def _bound(text: str) -> dt.datetime | None:
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return dt.datetime.fromisoformat(text.strip("'")).astimezone(_UTC)


def is_partitioned(cursor, table: str) -> bool:
    """Whether ``table`` is a partitioned table."""
    cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [table])
    row = cursor.fetchone()
    return bool(row and row[0])


def partitions(cursor, table: str) -> list[Partition]:
    """``table``'s partitions, the DEFAULT one first, then by lower bound."""
    cursor.execute("""
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(%s)""", [table])
    found = []
    for name, bound in cursor.fetchall():
        if bound == "DEFAULT":
            found.append(Partition(name, None, None, default=True))
            continue
        match = _BOUND.search(bound)
        found.append(Partition(name, _bound(match["lo"]), _bound(match["hi"])))
    far = dt.datetime.min.replace(tzinfo=_UTC)
    return sorted(found, key=lambda p: (not p.default, p.lower or far))


def _covered(existing: Iterable[Partition], lower: dt.datetime, upper: dt.datetime) -> bool:
    """Whether a range partition of ``existing`` overlaps [lower, upper)."""
    return any(not p.default and (p.lower is None or p.lower < upper) and (p.upper is None or lower < p.upper)
               for p in existing)


def create_day(cursor, table: str, day: dt.date) -> bool:
    """Create ``table``'s partition of ``day`` unless a range partition overlaps it; returns
    whether it did. Rows of that day already in the DEFAULT partition are moved into it.

    The partition is built detached and then attached: ATTACH takes only a SHARE UPDATE
    EXCLUSIVE lock on the parent (CREATE TABLE … PARTITION OF would take an ACCESS EXCLUSIVE one),
    and the attach adds the parent's indexes, constraints and foreign keys (on an empty table,
    at once). Run inside a transaction; waits at most :data:`LOCK_TIMEOUT` for a lock.
    """
    lower, upper = midnight(day), midnight(day + dt.timedelta(days=1))
    existing = partitions(cursor, table)
    if _covered(existing, lower, upper):
        return False
    key = TABLES[table]
    name = day_name(table, day)
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)")
    default = next((p.name for p in existing if p.default), None)
    if default:
        # The attach would refuse while the DEFAULT partition holds rows of the day.
        cursor.execute(f"""WITH moved AS (DELETE FROM {default} WHERE {key} >= {_literal(lower)} AND {key} < {_literal(upper)}
                                         RETURNING *)
                           INSERT INTO {name} SELECT * FROM moved""")
    cursor.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({_literal(lower)}) TO ({_literal(upper)})")
    return True


def today(cursor) -> dt.date:
    """The database's current UTC day."""
    cursor.execute("SELECT (now() AT TIME ZONE 'UTC')::date")
    return cursor.fetchone()[0]


def ensure_ahead(first: dt.date, last: dt.date, connection: Any = None) -> list[str]:
    """Create the day partitions of both tables from ``first`` through ``last`` that are
    missing, each in its own short transaction; returns the names created. A day a lock could
    not be had for is left to the next run (logged)."""
    connection = connection or default_connection
    created = []
    for table in TABLES:
        day = first
        while day <= last:
            try:
                with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                    if create_day(cursor, table, day):
                        created.append(day_name(table, day))
            except Exception:  # noqa: BLE001 - lock timeout: the partitions ahead leave days to retry
                log.exception("creating the partition of %s for %s failed; the next run retries", table, day)
            day += dt.timedelta(days=1)
    return created


# -- conversion ----------------------------------------------------------------------------------------
def _retry_lock(connection: Any, step, attempts: int = 30) -> Any:
    """Run ``step(cursor)`` in a transaction whose statements wait at most LOCK_TIMEOUT for a
    lock, again after a pause when one timed out (a long transaction held the table)."""
    from django.db import OperationalError

    for attempt in range(attempts):
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                return step(cursor)
        except OperationalError as error:
            if "lock timeout" not in str(error) or attempt == attempts - 1:
                raise
            log.warning("waiting for a lock (%s); trying again", error)
            time.sleep(1 + attempt)
    return None


def convert(connection: Any, table: str, *, ahead: int, redundant: Iterable[str] = ()) -> str:
    """Turn the unpartitioned ``table`` (of :data:`TABLES`) into the partitioned shape, keeping
    every row, with no lock held longer than a few catalog changes; returns what it did. A
    partitioned ``table`` is left alone. Needs autocommit (``CREATE INDEX CONCURRENTLY``).

    1. ``CREATE UNIQUE INDEX CONCURRENTLY`` on ``(id, key)``: the primary key to be, built
       while writes go on.
    2. ``CHECK (key < cutover) NOT VALID``, then ``VALIDATE`` (which blocks no writes): the
       promise that lets step 3's ATTACH skip scanning the table. The cutover is the start of
       the UTC day :data:`CUTOVER_DAYS` days on: rows inserted meanwhile (``now()``) keep it.
    3. One short transaction: rename the table to ``<table>_legacy`` (its indexes to
       ``…_legacy``), make the new index its primary key, create the partitioned parent under
       the old name with the same columns, constraints, indexes and foreign keys (all on an
       empty table: instant), ``ATTACH`` the legacy table ``FROM (MINVALUE) TO (cutover)``
       (its indexes and foreign keys are taken over as they are, nothing rebuilt), move the
       ``id`` sequence to the parent, add the DEFAULT partition and the day partitions from the
       cutover to ``ahead`` days from today. An empty table (a new installation) is dropped
       instead of attached, and the days start today.

    Args:
        redundant: names of the table's indexes not carried over (dropped).
    """
    key = TABLES[table]
    legacy = f"{table}_legacy"
    check = f"{table}_before_cutover"
    unique = f"{table}_id_{key}_uniq"
    with connection.cursor() as cursor:
        if is_partitioned(cursor, table):
            return "already partitioned"
        cutover_day = today(cursor) + dt.timedelta(days=CUTOVER_DAYS)
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [unique])
        row = cursor.fetchone()
        if row and not row[0]:  # a CONCURRENTLY build that was interrupted
            cursor.execute(f"DROP INDEX CONCURRENTLY {unique}")
        cursor.execute(f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {unique} ON {table} (id, {key})")

    def add_check(cursor):
        cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}")  # an earlier try's cutover
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({key} < {_literal(midnight(cutover_day))}) NOT VALID")

    _retry_lock(connection, add_check)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}")

    def swap(cursor):
        cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        if is_partitioned(cursor, table):
            return "already partitioned"
        cursor.execute("""SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                          WHERE x.indrelid = to_regclass(%s) AND NOT x.indisprimary AND i.relname <> %s""", [table, unique])
        indexes = cursor.fetchall()
        cursor.execute("""SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
                          WHERE conrelid = to_regclass(%s) AND contype = 'f'""", [table])
        foreign_keys = cursor.fetchall()
        cursor.execute("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'", [table])
        (primary,) = cursor.fetchone()
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
        sequence = cursor.fetchone()[0]
        next_id = None
        if sequence:
            cursor.execute(f"SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {sequence}")
            next_id = cursor.fetchone()[0]
            cursor.execute("SELECT attidentity <> '' FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'id'",
                           [table])
            if cursor.fetchone()[0]:
                # An identity column's sequence cannot move to another table: a plain one replaces it.
                cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP IDENTITY")
            else:
                cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
                cursor.execute(f"DROP SEQUENCE {sequence}")
        cursor.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {table})")
        empty = cursor.fetchone()[0]

        cursor.execute(f"ALTER TABLE {table} RENAME TO {legacy}")
        for name, _ in indexes:
            if name in redundant:
                cursor.execute(f"DROP INDEX {name}")
            else:
                cursor.execute(f"ALTER INDEX {name} RENAME TO {name[:56]}_legacy")
        cursor.execute(f"ALTER TABLE {legacy} DROP CONSTRAINT {primary}")
        cursor.execute(f"ALTER TABLE {legacy} ADD CONSTRAINT {legacy}_pkey PRIMARY KEY USING INDEX {unique}")

        cursor.execute(f"""CREATE TABLE {table} (LIKE {legacy} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)
                           PARTITION BY RANGE ({key})""")
        cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {check}")
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id, {key})")
        for name, definition in indexes:
            if name not in redundant:
                # pg_get_indexdef named the table by its old name, now the parent's.
                cursor.execute(definition)
        for name, definition in foreign_keys:
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        if sequence:
            cursor.execute(f"CREATE SEQUENCE {sequence} OWNED BY {table}.id")
            cursor.execute("SELECT setval(%s, %s, false)", [sequence, next_id])
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{sequence}'::regclass)")
        if empty:
            cursor.execute(f"DROP TABLE {legacy}")
            first = today(cursor)
        else:
            # The validated CHECK implies the partition constraint: PostgreSQL skips the scan.
            cursor.execute(f"""ALTER TABLE {table} ATTACH PARTITION {legacy}
                               FOR VALUES FROM (MINVALUE) TO ({_literal(midnight(cutover_day))})""")
            cursor.execute(f"ALTER TABLE {legacy} DROP CONSTRAINT {check}")
            first = cutover_day
        cursor.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        last = today(cursor) + dt.timedelta(days=ahead)
        day = first
        while day <= last:
            create_day(cursor, table, day)
            day += dt.timedelta(days=1)
        return ("created empty" if empty else f"legacy partition up to {cutover_day}") + f", days {first} to {last}"

    return _retry_lock(connection, swap)


# -- retention ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Maintained:
    """What :func:`maintain` did: partitions created and dropped, partitions past retention
    kept because a delivery in them is unfinished, events and notifications deleted."""

    created: list[str] = dataclasses.field(default_factory=list)
    dropped: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)
    events: int = 0
    notifications: int = 0


def _unfinished_sql(partition: str) -> str:
    return f"SELECT EXISTS (SELECT 1 FROM {partition} WHERE status <> ALL(%s::varchar[]))"


def _reopenable_statuses() -> list[str]:
    """The statuses of the ``delivery_due`` partial index (the model's; read, not repeated)."""
    from .models import Delivery

    index = next(i for i in Delivery._meta.indexes if i.name == "delivery_due")
    (lookup, statuses), = index.condition.children
    assert lookup == "status__in"
    return list(statuses)


def drop_delivery_partition(partition: Partition, connection: Any = None) -> tuple[bool, int, int]:
    """Drop a partition of ``notify_delivery`` whose deliveries are all final
    (:data:`~notify.models.FINAL_STATUSES`), then the events of its deliveries and the
    notifications left without a delivery; returns (dropped, events deleted, notifications
    deleted). A partition holding an unfinished delivery is left as it is.

    The check reads the whole partition without a lock. Under the drop's lock it is repeated on
    the ``delivery_due`` index only (a few pages): of the unfinished statuses, a final delivery
    can only go back to one of those (an operator's replay of a dead letter → ``queued``);
    ``standby`` is written at insert only. So the lock is held for milliseconds, not for a scan.
    """
    from .models import FINAL_STATUSES

    connection = connection or default_connection
    final = sorted(str(status) for status in FINAL_STATUSES)
    with connection.cursor() as cursor:
        cursor.execute(_unfinished_sql(partition.name), [final])
        if cursor.fetchone()[0]:
            return False, 0, 0
        cursor.execute("DROP TABLE IF EXISTS pg_temp.dropped_deliveries")
        cursor.execute(f"""CREATE TEMP TABLE dropped_deliveries AS
                           SELECT row_number() OVER () AS n, id, notification_id FROM {partition.name}""")
        cursor.execute("CREATE INDEX ON dropped_deliveries (n)")
        cursor.execute("SELECT count(*) FROM dropped_deliveries")
        count = cursor.fetchone()[0]

    def drop(cursor):
        cursor.execute(f"LOCK TABLE notify_delivery, {partition.name} IN ACCESS EXCLUSIVE MODE")
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {partition.name} WHERE status = ANY(%s::varchar[]))",
                       [_reopenable_statuses()])
        if cursor.fetchone()[0]:
            return False
        cursor.execute(f"DROP TABLE {partition.name}")
        return True

    try:
        if not _retry_lock(connection, drop, attempts=3):
            return False, 0, 0
        events = notifications = 0
        with connection.cursor() as cursor:
            # After the drop: an event recorded meanwhile for one of them is deleted too. In
            # slices, each its own transaction: one long one would hold back vacuum and the
            # analytics rollup (which waits for the transactions open before its watermark).
            for start in range(0, count, DELETE_SLICE):
                cursor.execute("""DELETE FROM notify_deliveryevent WHERE delivery_id IN
                                  (SELECT id FROM dropped_deliveries x WHERE x.n > %s AND x.n <= %s)""",
                               [start, start + DELETE_SLICE])
                events += cursor.rowcount
                cursor.execute("""DELETE FROM notify_notification n
                                  WHERE n.id IN (SELECT notification_id FROM dropped_deliveries x WHERE x.n > %s AND x.n <= %s)
                                    AND NOT EXISTS (SELECT 1 FROM notify_delivery d WHERE d.notification_id = n.id)""",
                               [start, start + DELETE_SLICE])
                notifications += cursor.rowcount
        return True, events, notifications
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS pg_temp.dropped_deliveries")


def maintain(*, ahead: int, retention_days: int, day: dt.date | None = None, connection: Any = None) -> Maintained:
    """Create both tables' day partitions from ``day`` (default: today, UTC) through ``ahead``
    days on, and with ``retention_days`` > 0 drop the partitions that end on or before
    ``day - retention_days``: a delivery partition only when all its deliveries are final
    (:func:`drop_delivery_partition`), a log partition only when it also ends before the oldest
    delivery partition still there begins (every log row of a delivery is at or after its
    ``created_at``, so the log of a kept delivery is kept). The DEFAULT partition is never
    dropped. Safe to run in several processes at once (each step rechecks under its lock)."""
    connection = connection or default_connection
    with connection.cursor() as cursor:
        day = day or today(cursor)
    done = Maintained(created=ensure_ahead(day, day + dt.timedelta(days=ahead), connection))
    if retention_days <= 0:
        return done
    cutoff = midnight(day - dt.timedelta(days=retention_days))
    with connection.cursor() as cursor:
        old = [p for p in partitions(cursor, "notify_delivery") if not p.default and p.upper and p.upper <= cutoff]
    for partition in old:
        dropped, events, notifications = drop_delivery_partition(partition, connection)
        if dropped:
            done.dropped.append(partition.name)
            done.events += events
            done.notifications += notifications
        else:
            done.kept.append(partition.name)
            log.warning("kept %s past retention: it holds an unfinished delivery", partition.name)
    with connection.cursor() as cursor:
        remaining = partitions(cursor, "notify_delivery")
        # The oldest delivery still there: the lowest bound of a range partition, or a row of DEFAULT.
        floor = min((p.lower or dt.datetime.min.replace(tzinfo=_UTC) for p in remaining if not p.default),
                    default=cutoff)
        for p in remaining:
            if p.default:
                cursor.execute(f"SELECT min(created_at) FROM {p.name}")
                oldest = cursor.fetchone()[0]
                if oldest is not None:
                    floor = min(floor, oldest)
        logs = [p for p in partitions(cursor, "notify_deliverylog")
                if not p.default and p.upper and p.upper <= cutoff and p.upper <= floor]

    def drop_log(name):
        def step(cursor):
            cursor.execute(f"DROP TABLE {name}")
        return step

    for partition in logs:
        try:
            _retry_lock(connection, drop_log(partition.name), attempts=3)
            done.dropped.append(partition.name)
        except Exception:  # noqa: BLE001 - lock timeout: the next run drops it
            log.exception("dropping %s failed; the next run retries", partition.name)
    return done

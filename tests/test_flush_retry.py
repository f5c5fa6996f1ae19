"""The test harness's own teardown: a transactional test's TRUNCATE that deadlocks with another
session (a running stack's worker, relay or maintenance) is run again rather than failing the
test (tests.helpers.flush_retrying_deadlocks, installed by conftest for the whole session)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.db.backends.base.operations import BaseDatabaseOperations

from tests.conftest import wait_until
from tests.helpers import flush_retrying_deadlocks, separate_session

pytestmark = pytest.mark.django_db(transaction=True)

TABLES = ("flush_probe_first", "flush_probe_second")


@pytest.fixture
def probe_tables():
    """Two tables of their own, so that the test decides the order the TRUNCATE locks them in."""
    with separate_session() as admin:
        for table in TABLES:
            admin.execute(f"CREATE TABLE {table} (id int)")
    yield TABLES
    with separate_session() as admin:
        for table in TABLES:
            admin.execute(f"DROP TABLE IF EXISTS {table}")


def test_a_flush_that_deadlocks_with_another_session_is_run_again(probe_tables):
    first, second = probe_tables
    other = separate_session()
    other.autocommit = False
    other.execute(f"INSERT INTO {second} VALUES (1)")  # holds ROW EXCLUSIVE on the second table
    outcome = {}

    def other_side():
        # Wait until the TRUNCATE holds the first table and waits for the second, then close the
        # cycle. The TRUNCATE waited first, so its deadlock check fires first and aborts it.
        wait_until(_truncate_waits_on_a_lock, timeout=10, message="the TRUNCATE to wait")
        other.execute(f"INSERT INTO {first} VALUES (1)")
        other.commit()
        outcome["other"] = "committed"

    attempts = []

    def counted(ops, sql_list):
        attempts.append(sql_list)
        return BaseDatabaseOperations.execute_sql_flush(ops, sql_list)

    helper = threading.Thread(target=other_side)
    helper.start()
    try:
        flush_retrying_deadlocks(counted)(connection.ops, [f"TRUNCATE {first}, {second};"])
    finally:
        helper.join(timeout=30)
        other.close()
    assert outcome == {"other": "committed"}
    assert len(attempts) == 2  # the first was the deadlock's victim
    with separate_session() as check:
        counts = [check.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in probe_tables]
    assert counts == [0, 0]  # the retry ran after the other session's rows were committed


def test_the_session_flush_is_the_retrying_one():
    from django.db.backends.postgresql.operations import DatabaseOperations

    assert DatabaseOperations.execute_sql_flush.__wrapped__ is BaseDatabaseOperations.execute_sql_flush


def test_any_other_error_of_a_flush_is_raised():
    from django.db.utils import ProgrammingError

    with pytest.raises(ProgrammingError):
        connection.ops.execute_sql_flush(["TRUNCATE flush_probe_absent;"])


def _truncate_waits_on_a_lock() -> bool:
    """Whether the test's TRUNCATE is waiting on a lock now."""
    with separate_session() as probe:
        return probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE 'TRUNCATE flush_probe%'").fetchone()[0] > 0

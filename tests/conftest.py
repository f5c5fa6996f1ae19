"""Shared fixtures. Everything runs against the real PostgreSQL, RabbitMQ and Redis (started by
scripts/services.sh) and, for stack tests, the real provider sandbox and Celery workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache

from devtools import demo
from devtools.stack import Stack, StackConfig


@pytest.fixture(scope="session")
def _queues_declared():
    """Declare the durable queues of the test vhost (workers declare them too)."""
    _purge_queues()


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_a_deadlock():
    """Transactional tests' teardown retries its TRUNCATE on a deadlock with a running stack
    (see tests.helpers.flush_retrying_deadlocks)."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    from tests.helpers import flush_retrying_deadlocks

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "execute_sql_flush",
                      flush_retrying_deadlocks(DatabaseOperations.execute_sql_flush))
        yield


@pytest.fixture
def _fresh_cache():
    cache.clear()
    yield


@pytest.fixture
def app_key(db, _fresh_cache, _queues_declared):
    """(App, raw API key) with the demo template."""
    return demo.create_app("tests")


@pytest.fixture
def api(app_key):
    """A DRF test client authenticated as the test app."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {app_key[1]}")
    return client


@pytest.fixture(scope="module")
def stack(request, django_db_setup, django_db_blocker, tmp_path_factory):
    """The whole system as child processes on the test database and the test vhost.

    A test module may set ``STACK_ENV`` (a dict) for its workers, e.g. a small retry budget, and
    ``STACK_EXTRA_CHANNELS`` for worker pools of channels its STACK_ENV adds.
    """
    db_name = settings.DATABASES["default"]["NAME"]
    config = StackConfig(
        env={"DJANGO_SETTINGS_MODULE": "settings.test", "NOTIFY_DB_NAME": db_name,
             **getattr(request.module, "STACK_ENV", {})},
        api_port=int(os.environ["NOTIFY_TEST_API_PORT"]),
        sandbox_port_base=int(os.environ["NOTIFY_TEST_SANDBOX_PORT_BASE"]),
        sandbox_dir=Path(settings.NOTIFY_SANDBOX_DIR),
        log_dir=Path(settings.VAR_DIR) / "test-log" / request.module.__name__.rsplit(".", 1)[-1],
        concurrency=2, api_workers=2, flower_port=None,
        channels=tuple(settings.NOTIFY_CHANNELS) + tuple(getattr(request.module, "STACK_EXTRA_CHANNELS", ())),
    )
    running = Stack(config)
    _purge_queues()
    running.start()
    from notify import providers

    providers.reset()
    yield running
    running.stop()


def _purge_queues() -> None:
    from notify.celery import app

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.conf.task_queues:
            queue.bind(channel).declare()
            queue.bind(channel).purge()


@pytest.fixture
def control(stack):
    """The stack's sandbox control API, reset for each test (see :func:`_reset_for_test`)."""
    from sandbox.client import SandboxControl

    yield from _reset_for_test(SandboxControl(stack.control_url))


@pytest.fixture
def ctl(sandbox):
    """The control client of the directory's own ``sandbox`` fixture (tests/sandbox and
    tests/channels each start one), reset for this test."""
    yield from _reset_for_test(sandbox.control)


def _reset_for_test(control):
    """Clear faults, dead tokens and records before the test, and faults after it."""
    control.clear_faults()
    control.revive_tokens()
    control.clear()
    yield control
    control.clear_faults()


def wait_until(predicate, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def empty_queues(_queues_declared):
    """Purge the test vhost's queues, for tests that read the messages on them. Only for tests
    without a running stack (its workers' messages would be lost)."""
    _purge_queues()


@pytest.fixture
def outbox_listener(transactional_db):
    """A LISTEN session on the outbox's wake-up channel (see tests.helpers.OutboxListener). Only
    committed transactions notify, hence transactional_db."""
    from tests.helpers import OutboxListener

    listener = OutboxListener()
    yield listener
    listener.close()

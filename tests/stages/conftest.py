"""Fixtures of the per-stage tests (accept, outbox, send, store): the stage's functions are
called in this process against the real PostgreSQL, Redis and RabbitMQ; the send stage's
adapters reach a provider sandbox of this directory's own."""

from __future__ import annotations

import os

import pytest
from django.test import override_settings

from channels import registry

#: Not the stack's (19600) nor the channel tests' (19500) sandbox ports.
PORT_BASE = int(os.environ.get("NOTIFY_TEST_STAGES_PORT_BASE", "19800"))


@pytest.fixture(scope="module")
def provider_sandbox(tmp_path_factory):
    """A running provider sandbox whose sandbox.json the service's settings fall back to, as in
    ``make run`` (adapters are rebuilt for it, and again afterwards)."""
    from notify import providers
    from sandbox.process import start_sandbox

    directory = tmp_path_factory.mktemp("stage-sandbox")
    handle = start_sandbox(directory, port_base=PORT_BASE)
    try:
        with override_settings(NOTIFY_SANDBOX_DIR=str(directory)):
            providers.reset()
            registry.close_all()
            yield handle
    finally:
        registry.close_all()
        providers.reset()
        handle.stop()


@pytest.fixture
def ctl(provider_sandbox):
    """The sandbox's control client, reset for each test."""
    from tests.conftest import _reset_for_test

    yield from _reset_for_test(provider_sandbox.control)


@pytest.fixture
def tripped(settings):
    """``tripped("ses")`` opens that breaker scope now (and closes it after the test)."""
    from notify import breaker

    settings.NOTIFY_BREAKER = {**settings.NOTIFY_BREAKER, "threshold": 1, "cooldown": 30}
    scopes = []

    def trip(scope: str) -> None:
        scopes.append(scope)
        breaker.record_failure(scope)
        breaker._local.pop(scope, None)

    yield trip
    for scope in scopes:
        breaker.record_success(scope)
        breaker._local.pop(scope, None)

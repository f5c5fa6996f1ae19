"""Fixtures for the channel adapter tests: one real provider sandbox per test session.

The sandbox (``sandbox/``, see sandbox/README.md) is started once as a subprocess on
``NOTIFY_TEST_CHANNELS_PORT_BASE`` (default 19500 … 19506, 127.0.0.1 only; not the stack's
``NOTIFY_TEST_SANDBOX_PORT_BASE``, so both suites can run at once). Each adapter is built
from its ``sandbox.json`` exactly as settings will build it in production: a plain mapping.
Records, fault rules and dead tokens are reset before every test.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import pytest

from channels.apns import APNsChannel
from channels.fcm import FCMChannel
from channels.ses_email import SESEmailChannel
from channels.smtp_email import SMTPEmailChannel
from channels.twilio_sms import TwilioSMSChannel
from channels.webpush import WebPushChannel

from .channel_support import CHANNEL_CLASSES

PORT_BASE = int(os.environ.get("NOTIFY_TEST_CHANNELS_PORT_BASE", "19500"))


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """The running sandbox (:class:`sandbox.process.SandboxHandle`)."""
    from sandbox.process import start_sandbox

    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), port_base=PORT_BASE)
    try:
        yield handle
    finally:
        handle.stop()


# -- channel configs, as settings will build them ---------------------------------------------
@pytest.fixture(scope="session")
def configs(sandbox) -> dict[str, dict[str, Any]]:
    """Channel name → adapter config mapping built from ``sandbox.json``."""
    c = sandbox.config
    ca = c["ca_file"]
    ses = c["ses"]
    return {
        "apns": {**c["apns"], "ca_file": ca, "timeout": 5},
        "fcm": {**c["fcm"], "ca_file": ca, "timeout": 5},
        "webpush": {"vapid_private_key_file": c["webpush"]["vapid_private_key_file"],
                    "vapid_subject": c["webpush"]["vapid_subject"], "ca_file": ca, "timeout": 5},
        "sms": {**c["twilio"], "ca_file": ca, "timeout": 5},
        "email": {"endpoint_url": ses["url"], "region": ses["region"],
                  "access_key_id": ses["access_key_id"],
                  "secret_access_key": ses["secret_access_key"],
                  "from_address": ses["from_address"], "ca_file": ca, "timeout": 5},
        "smtp": {**c["smtp"], "ca_file": ca, "timeout": 5},
    }


@pytest.fixture
def make_channel(configs) -> Callable[..., Any]:
    """``make_channel("apns", timeout=0.5)``: a fresh adapter with config overrides (closed
    at the end of the test)."""
    built = []

    def make(name: str, **overrides: Any):
        channel = CHANNEL_CLASSES[name]({**configs[name], **overrides})
        built.append(channel)
        return channel

    yield make
    for channel in built:
        channel.close()


# Session-wide adapters: one instance per "worker process", as channels.registry keeps them.
@pytest.fixture(scope="session")
def apns(configs):
    channel = APNsChannel(configs["apns"])
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def fcm(configs):
    channel = FCMChannel(configs["fcm"])
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def webpush(configs):
    channel = WebPushChannel(configs["webpush"])
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def sms(configs):
    channel = TwilioSMSChannel(configs["sms"])
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def email(configs):
    channel = SESEmailChannel(configs["email"])
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def smtp(configs):
    channel = SMTPEmailChannel(configs["smtp"])
    yield channel
    channel.close()

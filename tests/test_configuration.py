"""Production settings never fall back to the provider sandbox: a provider setting that is
missing stops the API, the relay and the workers at start-up, naming the variable."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = secrets.token_urlsafe(50)
CREDENTIAL_KEY = Fernet.generate_key().decode()
TWILIO = {"NOTIFY_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "NOTIFY_TWILIO_AUTH_TOKEN": "secret",
          "NOTIFY_TWILIO_FROM": "+15005550006"}


def start(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "AWS_", "DJANGO_"))}
    # Keys of its own: production refuses the public development keys (tests/test_deploy_settings.py).
    clean.update({"DJANGO_SETTINGS_MODULE": "settings.production", "DJANGO_SECRET_KEY": SECRET_KEY,
                  "NOTIFY_CREDENTIAL_KEYS": CREDENTIAL_KEY, **env})
    return subprocess.run(argv, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


API = [sys.executable, "-c", "import notify.wsgi"]
RELAY = [sys.executable, "manage.py", "relay"]
WORKER = [str(Path(sys.executable).with_name("celery")), "-A", "notify", "worker", "-Q", "sms", "-P", "solo",
          "--without-gossip", "--without-mingle", "--without-heartbeat"]


@pytest.mark.parametrize("process", [API, RELAY, WORKER], ids=["api", "relay", "worker"])
def test_a_missing_provider_setting_stops_the_start_and_names_the_variable(process):
    done = start(process, NOTIFY_CHANNELS="sms", **{k: v for k, v in TWILIO.items() if k != "NOTIFY_TWILIO_AUTH_TOKEN"})
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and "NOTIFY_TWILIO_AUTH_TOKEN (sms through twilio)" in done.stderr


def test_every_missing_setting_of_every_enabled_channel_is_named():
    done = start(API)
    assert done.returncode != 0
    for variable in ("NOTIFY_APNS_KEY_FILE", "NOTIFY_FCM_PROJECT_ID", "NOTIFY_VAPID_SUBJECT",
                     "NOTIFY_TWILIO_ACCOUNT_SID", "NOTIFY_SES_FROM"):
        assert variable in done.stderr
    assert "NOTIFY_SMTP_HOST" not in done.stderr  # SMTP is not in use unless chosen


def test_a_complete_configuration_starts_and_a_secondary_provider_is_checked_too():
    assert start(API, NOTIFY_CHANNELS="sms", **TWILIO).returncode == 0
    done = start(API, NOTIFY_CHANNELS="email", NOTIFY_SES_FROM="n@example.com",
                 NOTIFY_EMAIL_SECONDARY_PROVIDER="smtp")
    assert done.returncode != 0 and "NOTIFY_SMTP_HOST (email through smtp)" in done.stderr


def test_an_unknown_provider_choice_is_refused():
    done = start(API, NOTIFY_CHANNELS="sms", NOTIFY_SMS_PROVIDER="ses", **TWILIO)
    assert done.returncode != 0 and "is not a provider of sms" in done.stderr


def test_settings_an_adapter_refuses_stop_the_start_too():
    """Present but unusable: no sender for Twilio, a key file that does not exist."""
    done = start(API, NOTIFY_CHANNELS="sms", **{k: v for k, v in TWILIO.items() if k != "NOTIFY_TWILIO_FROM"})
    assert done.returncode != 0 and "provider twilio" in done.stderr and "from_number" in done.stderr
    # An API key's SID without its secret; a key with its secret (and the auth token) starts.
    done = start(API, NOTIFY_CHANNELS="sms", NOTIFY_TWILIO_API_KEY_SID="SK" + "1" * 32, **TWILIO)
    assert done.returncode != 0 and "provider twilio" in done.stderr and "api_key_secret together" in done.stderr
    assert start(API, NOTIFY_CHANNELS="sms", NOTIFY_TWILIO_API_KEY_SID="SK" + "1" * 32,
                 NOTIFY_TWILIO_API_KEY_SECRET="s" * 32, **TWILIO).returncode == 0
    done = start(API, NOTIFY_CHANNELS="apns", NOTIFY_APNS_KEY_FILE="/nonexistent/AuthKey.p8", NOTIFY_APNS_KEY_ID="K",
                 NOTIFY_APNS_TEAM_ID="T", NOTIFY_APNS_TOPIC="com.example")
    assert done.returncode != 0 and "provider apns" in done.stderr and "/nonexistent/AuthKey.p8" in done.stderr


#: Each durable queue's type as celeryconfig declares it, and Celery's default queue type.
QUEUE_TYPES = [sys.executable, "-c", "import django; django.setup(); from notify.celery import app; print(sorted("
               "(q.name, (q.queue_arguments or {}).get('x-queue-type', 'classic')) for q in app.conf.task_queues),"
               " app.conf.task_default_queue_type, app.conf.worker_detect_quorum_queues)"]


def test_the_queue_type_applies_to_every_durable_queue_and_an_unknown_one_stops_the_start():
    classic = start(QUEUE_TYPES, NOTIFY_CHANNELS="sms", **TWILIO)
    assert classic.returncode == 0, classic.stderr
    assert "[('maintenance', 'classic'), ('sms', 'classic'), ('sms.dead', 'classic')] classic True" in classic.stdout
    quorum = start(QUEUE_TYPES, NOTIFY_CHANNELS="sms", NOTIFY_QUEUE_TYPE="quorum", **TWILIO)
    assert "[('maintenance', 'quorum'), ('sms', 'quorum'), ('sms.dead', 'quorum')] quorum True" in quorum.stdout
    wrong = start(API, NOTIFY_CHANNELS="sms", NOTIFY_QUEUE_TYPE="mirrored", **TWILIO)
    assert wrong.returncode != 0 and "NOTIFY_QUEUE_TYPE must be classic or quorum" in wrong.stderr


def test_a_key_given_inline_replaces_its_file():
    """``NOTIFY_APNS_KEY`` (the .p8 content) instead of ``NOTIFY_APNS_KEY_FILE``: either one; neither is named."""
    from tests.credentials_support import ApnsKey

    apns = {"NOTIFY_APNS_KEY_ID": "K", "NOTIFY_APNS_TEAM_ID": "T", "NOTIFY_APNS_TOPIC": "com.example"}
    done = start(API, NOTIFY_CHANNELS="apns", NOTIFY_APNS_KEY=ApnsKey.new().private_pem, **apns)
    assert done.returncode == 0, done.stderr
    done = start(API, NOTIFY_CHANNELS="apns", **apns)
    assert done.returncode != 0 and "NOTIFY_APNS_KEY_FILE or NOTIFY_APNS_KEY (apns through apns)" in done.stderr

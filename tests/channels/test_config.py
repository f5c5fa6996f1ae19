"""Construction rules shared by the adapters: required keys, files, registry, no Django."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from channels import registry
from channels.errors import ChannelConfigurationError

from .channel_support import CHANNEL_CLASSES as _CLASSES

REQUIRED = {
    "apns": ("url", "key_file", "key_id", "team_id", "topic"),
    "fcm": ("url", "service_account_file", "project_id"),
    "webpush": ("vapid_private_key_file", "vapid_subject"),
    "sms": ("account_sid", "auth_token"),
    "email": ("region", "from_address"),
}


@pytest.mark.parametrize("name, key", [(n, k) for n, keys in REQUIRED.items() for k in keys])
def test_missing_required_key(configs, name, key):
    config = {k: v for k, v in configs[name].items() if k != key}
    with pytest.raises(ChannelConfigurationError, match=key):
        _CLASSES[name](config)


@pytest.mark.parametrize("name, key", [("apns", "key_file"), ("fcm", "service_account_file"),
                                       ("webpush", "vapid_private_key_file"),
                                       ("apns", "ca_file"), ("sms", "ca_file"),
                                       ("email", "ca_file")])
def test_missing_files_fail_at_construction(configs, tmp_path, name, key):
    missing = tmp_path / "nope.pem"
    with pytest.raises(ChannelConfigurationError):
        _CLASSES[name]({**configs[name], key: str(missing)})
    assert not missing.exists()  # py_vapid would have generated a key here


def test_sms_needs_a_sender(configs):
    with pytest.raises(ChannelConfigurationError, match="from_number"):
        _CLASSES["sms"]({**configs["sms"], "from_number": "", "messaging_service_sid": ""})


def test_bad_timeout(configs):
    with pytest.raises(ChannelConfigurationError):
        _CLASSES["webpush"]({**configs["webpush"], "timeout": -1})


def test_bad_apns_key(configs, tmp_path):
    bad = tmp_path / "AuthKey.p8"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ChannelConfigurationError):
        _CLASSES["apns"]({**configs["apns"], "key_file": str(bad)})


def test_registry_builds_each_channel_once_per_process(configs):
    calls = []

    def config_for(name):
        calls.append(name)
        return configs[name]

    registry.close_all()
    try:
        built = {name: registry.get_channel(name, config_for) for name in REQUIRED}
        again = {name: registry.get_channel(name, config_for) for name in REQUIRED}
        assert all(built[n] is again[n] for n in REQUIRED)
        assert sorted(calls) == sorted(REQUIRED)
        for name, channel in built.items():
            assert isinstance(channel, _CLASSES[name]) and channel.name == name
    finally:
        registry.close_all()


def test_channels_import_no_django():
    root = Path(__file__).resolve().parents[2]
    code = ("import sys, channels.apns, channels.fcm, channels.webpush, channels.twilio_sms, "
            "channels.ses_email, channels.sms_segments, channels.registry; "
            "bad = [m for m in sys.modules if m == 'django' or m.startswith(('django.', "
            "'notify'))]; print(bad); sys.exit(1 if bad else 0)")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

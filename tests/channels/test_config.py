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


PROVIDER_OF = {"apns": "apns", "fcm": "fcm", "webpush": "webpush", "sms": "twilio", "email": "ses"}


def test_required_config_is_what_the_settings_declare():
    for name, keys in REQUIRED.items():
        assert _CLASSES[name].required_config() == keys


def test_registry_builds_each_provider_once_per_process(configs):
    calls = []

    def config_for(provider):
        calls.append(provider)
        return configs[next(n for n, p in PROVIDER_OF.items() if p == provider)]

    registry.close_all()
    try:
        built = {p: registry.get_provider(p, config_for) for p in PROVIDER_OF.values()}
        again = {p: registry.get_provider(p, config_for) for p in PROVIDER_OF.values()}
        assert all(built[p] is again[p] for p in built)
        assert sorted(calls) == sorted(PROVIDER_OF.values())
        for name, provider in PROVIDER_OF.items():
            assert isinstance(built[provider], _CLASSES[name]) and built[provider].name == name
    finally:
        registry.close_all()


def test_every_list_of_channels_derives_from_the_registry():
    assert registry.channels()[:5] == ("apns", "fcm", "webpush", "sms", "email")
    assert registry.providers_of("email")[0] == "ses" and "smtp" in registry.providers_of("email")
    assert registry.channels_in_group("push") == ("apns", "fcm", "webpush")
    assert registry.device_platforms() == {"ios": "apns", "android": "fcm", "web": "webpush"}


class _Pager(_CLASSES["apns"]):
    name, provider, platform = "pager", "pager", "pager"


class _DisagreeingEmail(_CLASSES["email"]):
    provider = "other-email"
    collapses_resends = True


class _SamePlatform(_CLASSES["fcm"]):
    name, provider = "fcm2", "fcm2"


@pytest.mark.parametrize("extra, message", [
    ("channels.nowhere:Nothing", "cannot be imported"),
    ("tests.channels.test_config:_DisagreeingEmail", "collapses_resends differs"),
    ("tests.channels.test_config:_SamePlatform", "platform 'android'"),
    ("channels.apns:APNsChannel", "two adapters for provider 'apns'"),
])
def test_registry_refuses_inconsistent_adapters(extra, message):
    try:
        with pytest.raises(ChannelConfigurationError, match=message):
            registry.configure([extra])
    finally:
        registry.configure()


def test_an_extra_adapter_adds_its_channel_and_enabled_limits_them():
    try:
        registry.configure(["tests.channels.test_config:_Pager"], enabled=["pager", "sms"])
        assert registry.channels() == ("sms", "pager")
        assert registry.device_platforms() == {"pager": "pager"}
        with pytest.raises(ChannelConfigurationError, match="unknown channel"):
            registry.configure(enabled=["pager"])
    finally:
        registry.configure()


def test_channels_import_no_django():
    root = Path(__file__).resolve().parents[2]
    code = ("import sys, channels.apns, channels.fcm, channels.webpush, channels.twilio_sms, "
            "channels.ses_email, channels.smtp_email, channels.email, channels.sms_segments, "
            "channels.registry; "
            "bad = [m for m in sys.modules if m == 'django' or m.startswith(('django.', "
            "'notify'))]; print(bad); sys.exit(1 if bad else 0)")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- what an app stores: a key's content instead of its file, and which settings are secret -----

#: channel → (file setting, its inline alternative)
INLINE = {"apns": ("key_file", "key"), "fcm": ("service_account_file", "service_account_json"),
          "webpush": ("vapid_private_key_file", "vapid_private_key")}


@pytest.mark.parametrize("name", sorted(INLINE))
def test_a_files_content_given_inline_replaces_the_file_and_wins_over_it(configs, name, tmp_path):
    file_key, inline_key = INLINE[name]
    content = Path(configs[name][file_key]).read_text()
    without_file = {k: v for k, v in configs[name].items() if k != file_key}
    _CLASSES[name]({**without_file, inline_key: content}).close()  # the inline content alone suffices
    # Inline wins: the file the deployment names may not even exist for it.
    _CLASSES[name]({**configs[name], file_key: str(tmp_path / "absent"), inline_key: content}).close()
    with pytest.raises(ChannelConfigurationError, match=file_key):
        _CLASSES[name](without_file)  # neither: the file setting is named as missing


@pytest.mark.parametrize("name", sorted(INLINE))
def test_bad_inline_content_is_refused_without_quoting_it(configs, name):
    _, inline_key = INLINE[name]
    secret = "-----BEGIN PRIVATE KEY-----\nTOPSECRETNOTAKEY0123456789\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ChannelConfigurationError) as refused:
        _CLASSES[name]({**configs[name], inline_key: secret})
    assert inline_key in str(refused.value) and "TOPSECRET" not in str(refused.value)


def test_the_adapters_declare_their_secrets_and_what_only_the_deployment_sets():
    secret = {p: {s.key for s in cls.settings if s.secret} for p, cls in registry.providers().items()}
    assert secret == {"apns": {"key"}, "fcm": {"service_account_json"}, "webpush": {"vapid_private_key"},
                      "twilio": {"auth_token", "api_key_secret"}, "ses": {"secret_access_key"}, "smtp": {"password"}}
    for provider, cls in registry.providers().items():
        own = {s.key for s in cls.app_settings()}
        # Paths of the deployment's files, its CA bundle and timeouts are never an app's.
        assert not own & {"ca_file", "timeout", "key_file", "service_account_file", "vapid_private_key_file",
                          "private_endpoints"}, provider
        assert secret[provider] <= own
        for setting in cls.settings:
            if setting.content_of:
                assert next(s for s in cls.settings if s.key == setting.content_of).required, setting

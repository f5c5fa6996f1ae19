"""The production settings as README's "Running in production" configures them: Django's
deployment checklist passes with no warning, the public development key stops every start,
plain HTTP is redirected (probes and the scrape excepted), and Django's debug mode is on only
in `make run`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from devtools import run

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
INSECURE_KEY = "dev-only-insecure-secret-key-change-me-in-production-0123456789"

#: README's production environment (beside the provider variables, which the checks do not read).
DOCUMENTED = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "NOTIFY_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
    "DJANGO_ALLOWED_HOSTS": "notify.example.com",
    "NOTIFY_PUBLIC_URL": "https://notify.example.com",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}


def run_with(argv: list[str], settings_module: str = "settings.production", **env: str) -> subprocess.CompletedProcess:
    """``argv`` in a clean environment: none of this process's DJANGO_/NOTIFY_ variables but the
    test's own var directory (the metrics files), plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "AWS_", "DJANGO_"))}
    if "NOTIFY_VAR_DIR" in os.environ:
        clean["NOTIFY_VAR_DIR"] = os.environ["NOTIFY_VAR_DIR"]
    clean.update({"DJANGO_SETTINGS_MODULE": settings_module, **env})
    return subprocess.run(argv, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


def test_the_documented_production_environment_is_the_readmes():
    for name, value in DOCUMENTED.items():
        assert f"{name}=" in README, name
        if name not in ("DJANGO_SECRET_KEY", "NOTIFY_CREDENTIAL_KEYS"):
            assert f"{name}={value}" in README, name


@pytest.mark.parametrize("proxy", [True, False], ids=["behind a TLS proxy", "TLS in front of gunicorn"])
def test_check_deploy_passes_with_no_warning(proxy):
    env = dict(DOCUMENTED) if proxy else {k: v for k, v in DOCUMENTED.items() if k != "DJANGO_SECURE_PROXY_SSL_HEADER"}
    done = run_with([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], **env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output, output
    assert "WARNING" not in output and "security." not in output, output


@pytest.mark.parametrize("key", [None, INSECURE_KEY], ids=["unset", "the public development key"])
@pytest.mark.parametrize("argv", [[sys.executable, "-c", "import notify.wsgi"],
                                  [sys.executable, "manage.py", "check", "--deploy"]], ids=["api", "manage.py"])
def test_production_refuses_the_public_fallback_key(key, argv):
    env = {k: v for k, v in DOCUMENTED.items() if k != "DJANGO_SECRET_KEY"}
    if key is not None:
        env["DJANGO_SECRET_KEY"] = key
    done = run_with(argv, NOTIFY_CHANNELS="sms", NOTIFY_TWILIO_ACCOUNT_SID="AC" + "0" * 32,
                    NOTIFY_TWILIO_AUTH_TOKEN="secret", NOTIFY_TWILIO_FROM="+15005550006", **env)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and "DJANGO_SECRET_KEY" in done.stderr, done.stderr


@pytest.mark.parametrize("keys", [None, "public", "not-a-key"], ids=["unset", "the public development key first",
                                                                   "not a Fernet key"])
def test_production_refuses_to_start_without_a_credential_key_of_its_own(keys):
    env = {k: v for k, v in DOCUMENTED.items() if k != "NOTIFY_CREDENTIAL_KEYS"}
    if keys == "public":
        from settings.base import INSECURE_DEV_CREDENTIAL_KEY

        keys = f"{INSECURE_DEV_CREDENTIAL_KEY},{Fernet.generate_key().decode()}"
    if keys is not None:
        env["NOTIFY_CREDENTIAL_KEYS"] = keys
    done = run_with([sys.executable, "-c", "import notify.wsgi"], NOTIFY_CHANNELS="sms",
                    NOTIFY_TWILIO_ACCOUNT_SID="AC" + "0" * 32, NOTIFY_TWILIO_AUTH_TOKEN="secret",
                    NOTIFY_TWILIO_FROM="+15005550006", **env)
    assert done.returncode != 0
    assert "NOTIFY_CREDENTIAL_KEYS" in done.stderr, done.stderr
    assert "not-a-key" not in done.stderr  # a key is never printed


def test_production_starts_with_the_public_key_kept_second_to_decrypt_while_rotating():
    from settings.base import INSECURE_DEV_CREDENTIAL_KEY

    env = {**DOCUMENTED, "NOTIFY_CREDENTIAL_KEYS": f"{DOCUMENTED['NOTIFY_CREDENTIAL_KEYS']},{INSECURE_DEV_CREDENTIAL_KEY}"}
    done = run_with([sys.executable, "-c", "import notify.wsgi"], NOTIFY_CHANNELS="sms",
                    NOTIFY_TWILIO_ACCOUNT_SID="AC" + "0" * 32, NOTIFY_TWILIO_AUTH_TOKEN="secret",
                    NOTIFY_TWILIO_FROM="+15005550006", **env)
    assert done.returncode == 0, done.stderr


# Django's test client in the production settings: what a browser and a probe get.
HTTPS_PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
client = Client(HTTP_HOST="notify.example.com")
plain = client.get("/api/v1/")
probe = client.get("/health/live")
proxied = client.get("/api/v1/", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "probe": probe.status_code,
    "proxied": [proxied.status_code, proxied.get("Strict-Transport-Security"), proxied.get("X-Frame-Options")],
    "cookies_secure": [settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE],
    "debug": settings.DEBUG,
}))
"""


def test_production_redirects_plain_http_except_probes_and_sends_hsts():
    done = run_with([sys.executable, "-c", HTTPS_PROBE], **DOCUMENTED)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://notify.example.com/api/v1/"]
    assert seen["probe"] == 200
    assert seen["proxied"] == [200, "max-age=31536000; includeSubDomains; preload", "DENY"]
    assert seen["cookies_secure"] == [True, True]
    assert seen["debug"] is False


DEBUG_OF = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"


@pytest.mark.parametrize("settings_module,env", [
    ("settings.production", DOCUMENTED),
    ("settings.dev", {}),  # docker-compose, bench
    ("settings.test", {}),
])
def test_debug_is_off_by_default(settings_module, env):
    done = run_with([sys.executable, "-c", DEBUG_OF], settings_module=settings_module, **env)
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


def test_make_run_turns_debug_on_with_the_dev_settings_only():
    environ: dict[str, str] = {}
    run.defaults(environ)
    assert environ == {"DJANGO_SETTINGS_MODULE": "settings.dev", "DJANGO_DEBUG": "1"}
    done = run_with([sys.executable, "-c", DEBUG_OF], settings_module="settings.dev", **{"DJANGO_DEBUG": "1"})
    assert done.stdout.strip() == "True", done.stderr
    # Set by the caller: kept. Another settings module: no debug mode.
    environ = {"DJANGO_DEBUG": "0"}
    run.defaults(environ)
    assert environ["DJANGO_DEBUG"] == "0"
    environ = {"DJANGO_SETTINGS_MODULE": "settings.test"}
    run.defaults(environ)
    assert "DJANGO_DEBUG" not in environ

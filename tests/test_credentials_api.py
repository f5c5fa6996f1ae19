"""An app's own provider credentials through the admin-scoped API and the admin: checked against
the adapter's declarations and by building the adapter before anything is written, stored
encrypted (MultiFernet), never shown again (no API answer, no admin page, no log line holds a
secret), and re-encrypted by ``manage.py rotate_credential_keys`` with a new key."""

from __future__ import annotations

import io
import logging

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from notify import credentials, logmask, providers, sealing
from notify.models import App, ProviderCredential
from tests.credentials_support import ApnsKey, TwilioAccount, admin_client

pytestmark = pytest.mark.django_db

API = "/api/v1/credentials"


@pytest.fixture(autouse=True)
def _deployment_without_provider_settings(settings):
    """The deployment configures no provider here (no sandbox fallback): what an adapter needs
    comes from the app's own settings, so what the adapter refuses does not depend on a sandbox
    another test left running."""
    settings.NOTIFY_SANDBOX_FALLBACK = False
    providers.reset()
    yield
    providers.reset()


@pytest.fixture
def shop(db, _fresh_cache):
    app = App.objects.create(name="shop")
    return app, admin_client(app)


def put(client, provider, values):
    return client.put(f"{API}/{provider}", {"values": values}, format="json")


def test_put_get_list_change_delete_with_secrets_never_shown(shop):
    app, client = shop
    key, account = ApnsKey.new(), TwilioAccount.new()
    answers = []

    development = "https://api.sandbox.push.apple.com"  # this app's builds are development builds
    r = put(client, "apns", {**key.values("com.example.shop"), "url": development})
    answers.append(r)
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["provider"] == "apns" and body["channel"] == "apns" and body["version"] == 1
    assert body["values"] == {"key_id": key.key_id, "team_id": key.team_id, "topic": "com.example.shop",
                              "url": development}
    assert body["secrets"] == ["key"] and body["readable"] is True
    answers.append(r := put(client, "twilio", account.values()))
    assert r.status_code == 201 and r.json()["secrets"] == ["auth_token"]
    assert r.json()["values"] == {"account_sid": account.account_sid, "from_number": account.from_number}

    answers.append(r := client.get(API))
    assert [row["provider"] for row in r.json()] == ["apns", "twilio"]
    answers.append(r := client.get(f"{API}/apns"))
    assert r.status_code == 200 and r.json()["values"]["key_id"] == key.key_id

    # PUT replaces the whole set: a setting left out is the deployment's again.
    second = ApnsKey.new()
    answers.append(r := put(client, "apns", second.values("com.example.shop")))
    assert r.status_code == 200, r.content
    assert r.json()["version"] == 2 and "url" not in r.json()["values"]
    answers.append(r := put(client, "apns", second.values("com.example.shop")))
    assert (r.status_code, r.json()["version"]) == (200, 2)  # the same values again: no change
    assert credentials.stored_values(app.id, "apns")["key"] == second.private_pem

    answers.append(r := client.delete(f"{API}/twilio"))
    assert r.status_code == 204
    answers.append(r := client.get(f"{API}/twilio"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_credentials"

    for secret in (key.secret_part, second.secret_part, account.auth_token, "PRIVATE KEY"):
        assert not [a for a in answers if secret in a.content.decode()], secret


def test_the_values_are_stored_encrypted(shop):
    app, client = shop
    account = TwilioAccount.new()
    assert put(client, "twilio", account.values()).status_code == 201
    row = ProviderCredential.objects.get(app=app, provider="twilio")
    for clear in (account.auth_token, account.account_sid, account.from_number):
        assert clear not in row.sealed
    assert sealing.unseal(row.sealed) == account.values()


@pytest.mark.parametrize("values, field, reason", [
    ({"nope": "x"}, "values.nope", "unknown_setting"),
    ({"key_file": "/etc/passwd"}, "values.key_file", "not_per_app"),  # a path on the deployment's hosts
    ({"ca_file": "/tmp/ca.pem"}, "values.ca_file", "not_per_app"),
    ({"key_id": 12}, "values.key_id", "invalid"),
    ({"key_id": "  "}, "values.key_id", "blank"),
    ({}, "values", "required"),
])
def test_settings_the_adapter_does_not_let_an_app_set_are_refused_by_name(shop, values, field, reason):
    _, client = shop
    r = put(client, "apns", values)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["reasons"][field] == [reason], error
    assert not ProviderCredential.objects.exists()


def test_settings_the_adapter_cannot_be_built_with_are_refused_with_its_reason(shop):
    app, client = shop
    key = ApnsKey.new()
    assert put(client, "apns", key.values("com.example.shop")).status_code == 201
    broken = {**key.values("com.example.shop"), "key": "-----BEGIN PRIVATE KEY-----\nTOPSECRETGARBAGE\n"
                                                      "-----END PRIVATE KEY-----\n"}
    r = put(client, "apns", broken)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_credentials"
    assert "key (inline)" in r.json()["error"]["message"] and "TOPSECRET" not in r.content.decode()
    # No sender: the Twilio adapter's own rule (the deployment has none either).
    r = put(client, "twilio", {"account_sid": "AC" + "1" * 32, "auth_token": "t" * 32})
    assert r.status_code == 400 and "from_number" in r.json()["error"]["message"]
    row = ProviderCredential.objects.get(app=app)
    assert (row.provider, row.version) == ("apns", 1) and credentials.stored_values(app.id, "apns")["key"] == key.private_pem


def test_a_twilio_api_key_is_stored_beside_the_auth_token_and_its_secret_never_shown(shop):
    app, client = shop
    account = TwilioAccount.new(api_key=True)
    answers = [r := put(client, "twilio", account.values())]
    assert r.status_code == 201, r.content
    assert r.json()["secrets"] == ["api_key_secret", "auth_token"]
    assert r.json()["values"] == {"account_sid": account.account_sid, "api_key_sid": account.api_key_sid,
                                  "from_number": account.from_number}
    answers += [client.get(f"{API}/twilio"), client.get(API)]
    assert not [a for a in answers if account.api_key_secret in a.content.decode()]
    row = ProviderCredential.objects.get(app=app, provider="twilio")
    assert account.api_key_secret not in row.sealed and credentials.stored_values(app.id, "twilio") == account.values()
    adapter = credentials.adapter_class("twilio")(providers.app_config("twilio", account.values()))
    try:  # REST calls go with the key, for the app's account
        assert (adapter.client.username, adapter.client.account_sid) == (account.api_key_sid, account.account_sid)
    finally:
        adapter.close()


@pytest.mark.parametrize("leave_out, named", [
    ("api_key_secret", "together"), ("api_key_sid", "together"),
    ("auth_token", "auth_token"),  # Twilio signs webhooks with the token alone: still required
])
def test_an_incomplete_twilio_api_key_is_refused_and_nothing_written(shop, leave_out, named):
    _, client = shop
    values = {k: v for k, v in TwilioAccount.new(api_key=True).values().items() if k != leave_out}
    r = put(client, "twilio", values)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_credentials", r.content
    assert named in r.json()["error"]["message"]
    assert values.get("api_key_secret", "-") not in r.content.decode()
    r = put(client, "twilio", {**TwilioAccount.new().values(), "api_key_sid": "AC" + "1" * 32, "api_key_secret": "s"})
    assert r.status_code == 400 and "api_key_sid must be SK" in r.json()["error"]["message"]
    assert not ProviderCredential.objects.exists()


def test_an_apps_account_never_meets_the_deployments_twilio_token_or_key(shop, settings):
    """The account SID, auth token and API key are one group: an app setting any of them brings
    the group; the deployment's others are not used (the deployment's key with the app's
    account would authenticate as neither)."""
    deployment = TwilioAccount.new(api_key=True)
    settings.NOTIFY_PROVIDER_ENV = {**settings.NOTIFY_PROVIDER_ENV, "twilio": {
        **settings.NOTIFY_PROVIDER_ENV["twilio"], **deployment.values()}}
    own = TwilioAccount.new(from_number="+15005550099")
    config = providers.app_config("twilio", own.values())
    assert (config["account_sid"], config["auth_token"], config["api_key_sid"], config["api_key_secret"]) == (
        own.account_sid, own.auth_token, None, None)
    sender_only = providers.app_config("twilio", {"from_number": own.from_number})  # not of the group
    assert (sender_only["api_key_sid"], sender_only["from_number"]) == (deployment.api_key_sid, own.from_number)
    _, client = shop
    # The app's own account without its auth token: the deployment's token is not lent to it.
    r = put(client, "twilio", {k: v for k, v in own.values().items() if k != "auth_token"})
    assert r.status_code == 400 and "auth_token" in r.json()["error"]["message"], r.content
    assert put(client, "twilio", own.values()).status_code == 201


def test_an_unknown_provider_is_a_404_and_another_apps_credentials_are_not_found(shop):
    app, client = shop
    r = put(client, "carrier-pigeon", {"x": "y"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_provider"
    assert client.get(f"{API}/carrier-pigeon").json()["error"]["code"] == "unknown_provider"
    assert put(client, "twilio", TwilioAccount.new().values()).status_code == 201
    other = admin_client(App.objects.create(name="other"))
    assert other.get(API).json() == []
    for method in ("get", "delete"):
        r = getattr(other, method)(f"{API}/twilio")
        assert r.status_code == 404 and r.json()["error"]["code"] == "no_credentials"
    assert ProviderCredential.objects.filter(app=app).count() == 1


def test_credentials_sealed_with_a_key_no_longer_configured_are_shown_unreadable(shop, settings):
    app, client = shop
    assert put(client, "twilio", TwilioAccount.new().values()).status_code == 201
    settings.NOTIFY_CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    body = client.get(f"{API}/twilio").json()
    assert body["readable"] is False and body["values"] == {} and body["secrets"] == []


# --- the admin ---------------------------------------------------------------------------------

@pytest.fixture
def admin_browser(db):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    browser = Client()
    browser.force_login(user)
    return browser


def test_the_admin_pages_never_show_a_secret_and_a_blank_secret_keeps_the_stored_one(shop, admin_browser):
    app, client = shop
    key, account = ApnsKey.new(), TwilioAccount.new()
    assert put(client, "apns", key.values("com.example.shop")).status_code == 201
    secrets_ = (key.secret_part, account.auth_token)

    # Added in the admin: every provider's fields on the add page, only the chosen one's read.
    added = admin_browser.post("/admin/notify/providercredential/add/", {
        "app": app.id, "provider": "twilio", **{f"twilio__{k}": v for k, v in account.values().items()}})
    assert added.status_code == 302, added.content.decode()[:3000]
    row = ProviderCredential.objects.get(app=app, provider="twilio")
    assert credentials.stored_values(app.id, "twilio") == account.values()

    pages = [admin_browser.get("/admin/notify/providercredential/"),
             admin_browser.get("/admin/notify/providercredential/add/"),
             admin_browser.get(f"/admin/notify/providercredential/{row.pk}/change/"),
             admin_browser.get(f"/admin/notify/providercredential/{ProviderCredential.objects.get(provider='apns').pk}"
                               f"/change/")]
    assert all(page.status_code == 200 for page in pages)
    html = "".join(page.content.decode() for page in pages)
    assert account.account_sid in html and key.key_id in html  # non-secret values are shown
    assert "auth_token" in html and "set; leave blank to keep it" in html
    for secret in secrets_:
        assert secret not in html

    # A change leaving the secret blank keeps it; the version moves; a refused form echoes no secret.
    changed = admin_browser.post(f"/admin/notify/providercredential/{row.pk}/change/", {
        "twilio__account_sid": account.account_sid, "twilio__auth_token": "", "twilio__from_number": "+15005550007"})
    assert changed.status_code == 302, changed.content.decode()[:3000]
    row.refresh_from_db()
    assert row.version == 2
    assert credentials.stored_values(app.id, "twilio") == {**account.values(), "from_number": "+15005550007"}
    refused = admin_browser.post(f"/admin/notify/providercredential/{row.pk}/change/", {
        "twilio__account_sid": account.account_sid, "twilio__auth_token": "NEWSECRETVALUE",
        "twilio__from_number": ""})  # no sender: the adapter refuses
    assert refused.status_code == 200 and "NEWSECRETVALUE" not in refused.content.decode()
    row.refresh_from_db()
    assert row.version == 2


def test_the_admin_refuses_what_the_api_refuses(shop, admin_browser):
    app, _ = shop
    r = admin_browser.post("/admin/notify/providercredential/add/", {
        "app": app.id, "provider": "apns", "apns__key_id": "ABCDEFGHIJ", "apns__team_id": "ABCDEFGHIJ",
        "apns__topic": "com.example.shop", "apns__key": "not a key"})
    assert r.status_code == 200 and "refuses these settings" in r.content.decode()
    assert not ProviderCredential.objects.exists()


# --- logs ----------------------------------------------------------------------------------------

def test_no_secret_reaches_a_log_line(shop, caplog):
    _, client = shop
    key, account = ApnsKey.new(), TwilioAccount.new()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logmask.MaskFilter())
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG):
            put(client, "apns", key.values("com.example.shop"))
            put(client, "apns", {**key.values("com.example.shop"), "key": key.private_pem.replace("A", "B", 3)})
            put(client, "twilio", account.values())
            # What a careless line would log: the filter masks secret fields and PEM blocks.
            logging.getLogger("notify.test").warning("settings %s", {"auth_token": account.auth_token},
                                                     extra={"auth_token": account.auth_token, "key": key.private_pem})
            logging.getLogger("notify.test").warning("key was %s", key.private_pem)
    finally:
        logging.getLogger().removeHandler(handler)
    written = stream.getvalue()
    assert "settings" in written and "key was" in written
    for secret in (key.secret_part, account.auth_token):
        assert secret not in written
    assert credentials.secret_keys() >= {"key", "auth_token", "password", "secret_access_key"}


# --- key rotation ------------------------------------------------------------------------------------

def test_rotate_credential_keys_reencrypts_every_row_so_the_old_key_can_go(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.NOTIFY_CREDENTIAL_KEYS = [old]
    apps = [App.objects.create(name=f"rotate-{n}") for n in range(5)]
    accounts = {app.id: TwilioAccount.new() for app in apps}
    for app in apps:
        credentials.save(app.id, "twilio", accounts[app.id].values())
    versions = dict(ProviderCredential.objects.values_list("app_id", "version"))

    settings.NOTIFY_CREDENTIAL_KEYS = [new, old]  # the new key first, the old one still decrypts
    out = io.StringIO()
    call_command("rotate_credential_keys", "--batch", "2", stdout=out)
    assert "5 re-encrypted, 0 already under the first key, 0 unreadable" in out.getvalue()
    call_command("rotate_credential_keys", stdout=(again := io.StringIO()))
    assert "0 re-encrypted, 5 already under the first key" in again.getvalue()
    assert dict(ProviderCredential.objects.values_list("app_id", "version")) == versions  # values unchanged

    settings.NOTIFY_CREDENTIAL_KEYS = [new]  # the old key dropped
    for app in apps:
        assert credentials.stored_values(app.id, "twilio") == accounts[app.id].values()
    settings.NOTIFY_CREDENTIAL_KEYS = [old]
    with pytest.raises(sealing.SealError):
        credentials.stored_values(apps[0].id, "twilio")
    with pytest.raises(CommandError, match="5 rows open with no key"):
        call_command("rotate_credential_keys", stdout=io.StringIO())


def test_a_name_or_value_that_is_not_text_is_refused_by_name(shop):
    _, client = shop
    r = client.generic("PUT", f"{API}/twilio", '{"values": {"from_number": "a\\u0000b", "x\\ud800": "y"}}',
                       content_type="application/json")
    assert r.status_code == 400, r.content
    reasons = r.json()["error"]["reasons"]
    assert reasons["values.from_number"] == ["invalid"] and reasons["values.x\\ud800"] == ["unknown_setting"]
    assert not ProviderCredential.objects.exists()

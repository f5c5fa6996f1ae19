"""Send with an app's own provider credentials (notify.credentials, notify.providers): the
worker's claim says which version of its settings an app has, the send uses that app's own
adapter (built once, rebuilt on a new version, the old one closed) or the shared one, and the
provider sandbox's records show which key and account each request carried. A key rotation
keeps every app sending; settings no key opens make the delivery wait, not the provider's
breaker trip."""

from __future__ import annotations

import io
import secrets

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.management import call_command
from rest_framework.test import APIClient
from twilio.request_validator import RequestValidator

from channels import registry
from devtools import demo
from notify import breaker, providers, send
from notify.models import Delivery
from tests.credentials_support import ApnsKey, TwilioAccount, admin_client

pytestmark = pytest.mark.django_db(transaction=True)

B_TOPIC = "com.example.tenant-b"


class Tenant:
    """An app with a recipient holding an iPhone and a phone number."""

    def __init__(self, name: str):
        self.app, key = demo.create_app(name)
        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        self.admin = admin_client(self.app)
        self.token = secrets.token_hex(32)
        self.phone = f"+1415555{secrets.randbelow(10_000):04d}"
        assert self.api.put(f"/api/v1/recipients/{name}-user", {"phone": self.phone},
                            format="json").status_code == 201
        assert self.api.post(f"/api/v1/recipients/{name}-user/devices", {"platform": "ios", "token": self.token},
                             format="json").status_code == 201
        self.user = f"{name}-user"

    def own(self, provider: str, values: dict) -> dict:
        r = self.admin.put(f"/api/v1/credentials/{provider}", {"values": values}, format="json")
        assert r.status_code in (200, 201), r.content
        return r.json()

    def send_all(self) -> dict[str, str]:
        """Accept a push and an SMS and send them in this process: channel → delivery id."""
        r = self.api.post("/api/v1/notifications", {"recipient": self.user, "channels": ["apns", "sms"], "content": {
            "push": {"title": "hi"}, "sms": {"body": "hi"}}}, format="json")
        assert r.status_code == 202, r.content
        ids = {d["channel"]: d["id"] for d in r.json()["deliveries"]}
        for delivery_id in ids.values():
            assert send.send(delivery_id) == "sent", Delivery.objects.get(id=delivery_id).reason
        return ids


def carried(ctl, ids: dict[str, str]) -> dict[str, tuple]:
    """What the sandbox saw for each delivery: APNs (key id, team id, topic), Twilio (account
    SID, From)."""
    (apns,) = ctl.records("apns", delivery_id=ids["apns"])
    (sms,) = ctl.records("twilio", delivery_id=ids["sms"])
    assert apns["accepted"] and sms["accepted"], (apns, sms)
    return {"apns": (apns["extra"]["key_id"], apns["extra"]["team_id"], apns["headers"]["apns-topic"]),
            "sms": (sms["extra"]["account_sid"], sms["body"]["From"])}


@pytest.fixture
def tenants(ctl, _fresh_cache, _queues_declared):
    """App A on the deployment's credentials, app B with its own APNs key and Twilio account
    (registered with the sandbox)."""
    registry.close_all()
    a, b = Tenant("tenant-a"), Tenant("tenant-b")
    key, account = ApnsKey.new(), TwilioAccount.new(from_number="+15005550099")
    key.register(ctl, topic=B_TOPIC)
    account.register(ctl)
    b.own("apns", key.values(B_TOPIC))
    b.own("twilio", account.values())
    yield a, b, key, account
    registry.close_all()


def deployment(ctl) -> dict[str, tuple]:
    c = ctl.config()
    return {"apns": (c["apns"]["key_id"], c["apns"]["team_id"], c["apns"]["topic"]),
            "sms": (c["twilio"]["account_sid"], c["twilio"]["from_number"])}


def test_each_app_sends_with_its_own_credentials_or_the_deployments(ctl, tenants):
    a, b, key, account = tenants
    for _ in range(2):  # the second round reuses each process-wide adapter
        assert carried(ctl, a.send_all()) == deployment(ctl)
        assert carried(ctl, b.send_all()) == {"apns": (key.key_id, key.team_id, B_TOPIC),
                                              "sms": (account.account_sid, account.from_number)}
    assert registry.tenant_versions() == {("apns", b.app.id): 1, ("twilio", b.app.id): 1}


def test_changed_credentials_are_used_by_the_next_send_and_the_old_client_is_closed(ctl, tenants):
    a, b, key, account = tenants
    b.send_all()
    old = providers.adapter("apns", b.app.id, 1)
    assert not old.client.is_closed
    new_key = ApnsKey.new()
    new_key.register(ctl, topic=B_TOPIC)
    assert b.own("apns", new_key.values(B_TOPIC))["version"] == 2

    assert carried(ctl, b.send_all())["apns"] == (new_key.key_id, new_key.team_id, B_TOPIC)
    assert old.client.is_closed and registry.tenant_versions()[("apns", b.app.id)] == 2

    # Deleted: the app sends with the deployment's again, its own client dropped.
    assert b.admin.delete("/api/v1/credentials/twilio").status_code == 204
    assert carried(ctl, b.send_all())["sms"] == deployment(ctl)["sms"]
    assert ("twilio", b.app.id) not in registry.tenant_versions()


def test_a_key_rotation_keeps_every_app_sending(ctl, tenants, settings):
    a, b, key, account = tenants
    first = list(django_settings.NOTIFY_CREDENTIAL_KEYS)
    new = Fernet.generate_key().decode()
    settings.NOTIFY_CREDENTIAL_KEYS = [new, *first]  # the new key first; the old one still opens
    registry.close_all()  # every process restarted with the new list
    assert carried(ctl, b.send_all())["apns"][0] == key.key_id
    out = io.StringIO()
    call_command("rotate_credential_keys", stdout=out)
    assert "2 re-encrypted" in out.getvalue()

    settings.NOTIFY_CREDENTIAL_KEYS = [new]  # the old key dropped, the processes restarted
    registry.close_all()
    assert carried(ctl, a.send_all()) == deployment(ctl)
    assert carried(ctl, b.send_all()) == {"apns": (key.key_id, key.team_id, B_TOPIC),
                                          "sms": (account.account_sid, account.from_number)}


def test_settings_no_key_opens_make_the_delivery_wait_without_tripping_the_providers_breaker(ctl, tenants,
                                                                                            settings):
    a, b, key, account = tenants
    settings.NOTIFY_CREDENTIAL_KEYS = [Fernet.generate_key().decode()]  # the old key dropped too early
    registry.close_all()
    r = b.api.post("/api/v1/notifications", {"recipient": b.user, "channels": ["apns"],
                                             "content": {"push": {"title": "hi"}}}, format="json")
    (delivery,) = r.json()["deliveries"]
    assert send.send(delivery["id"]) == "retrying"
    row = Delivery.objects.get(id=delivery["id"])
    assert row.reason == "app_credentials_unusable" and not ctl.records("apns", delivery_id=delivery["id"])
    assert breaker.state("apns") == breaker.CLOSED
    assert carried(ctl, a.send_all()) == deployment(ctl)  # the other apps send on


def test_status_callbacks_of_an_apps_own_account_are_verified_with_its_token(ctl, tenants, client):
    a, b, key, account = tenants
    ids = b.send_all()
    (record,) = ctl.records("twilio", delivery_id=ids["sms"])
    callback = record["body"]["StatusCallback"]
    assert f"app={b.app.id}" in callback
    path = callback[len(django_settings.NOTIFY_PUBLIC_URL.rstrip("/")):]
    fields = {"MessageSid": Delivery.objects.get(id=ids["sms"]).provider_message_id, "MessageStatus": "delivered",
              "AccountSid": account.account_sid}

    def post(token: str):
        signature = RequestValidator(token).compute_signature(callback, fields)
        return client.post(path, fields, HTTP_X_TWILIO_SIGNATURE=signature)

    assert post(ctl.config()["twilio"]["auth_token"]).status_code == 403  # the deployment's token: not its
    assert post(account.auth_token).status_code == 204
    assert Delivery.objects.get(id=ids["sms"]).status == "delivered"


def test_an_app_may_send_with_an_api_key_of_its_own_account(ctl, tenants):
    """The deployment (the sandbox's settings) sends with its API key; an app's own account
    without a key with its own auth token, never the deployment's key (one settings group); an
    app's own key, for its own account; webhooks stay verified with the account's auth token."""
    a, b, key, account = tenants

    def auth(ids: dict[str, str]) -> tuple[str, str]:
        (sms,) = ctl.records("twilio", delivery_id=ids["sms"])
        return sms["extra"]["account_sid"], sms["extra"]["auth"]

    deployment_twilio = ctl.config()["twilio"]
    assert auth(a.send_all()) == (deployment_twilio["account_sid"], f"api_key:{deployment_twilio['api_key_sid']}")
    assert auth(b.send_all()) == (account.account_sid, "auth_token")

    keyed = TwilioAccount.new(from_number="+15005550099", api_key=True)
    keyed.register(ctl)
    assert b.own("twilio", keyed.values())["secrets"] == ["api_key_secret", "auth_token"]
    assert auth(b.send_all()) == (keyed.account_sid, f"api_key:{keyed.api_key_sid}")
    adapter = providers.adapter_of_app("twilio", b.app.id)
    url, fields = "https://notify.example.com/webhooks/twilio/status?app=1", {"MessageStatus": "delivered"}
    signature = RequestValidator(keyed.auth_token).compute_signature(url, fields)
    assert adapter.verify_webhook(url, fields, {"X-Twilio-Signature": signature})

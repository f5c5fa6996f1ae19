"""Two apps sending at once through the whole stack (API, relay, worker pools, provider sandbox):
app B with its own APNs key and Twilio account, set through the admin-scoped API, app A on the
deployment's. Every request at the sandbox carries its own app's credentials, B's status
callbacks are verified with B's account, and new credentials set through the API are what the
very next send uses."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools import demo
from notify.models import REACHED_PROVIDER, AppAPIKey, Delivery
from tests.conftest import wait_until
from tests.credentials_support import ApnsKey, TwilioAccount
from tests.test_e2e import wait_final

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

B_TOPIC = "com.example.tenant-b"
ROUNDS = 6


class App:
    """An app's keys (a sending one and an admin one) and its recipients, through the HTTP API."""

    def __init__(self, stack, name: str):
        self.stack = stack
        self.row, self.key = demo.create_app(name)
        _, self.admin_key = AppAPIKey.objects.create_key(name=f"{name} admin", app=self.row, scopes=["admin"])
        self.users = []

    def call(self, method: str, path: str, body=None, admin: bool = False):
        return demo.call(self.stack.api_url, self.admin_key if admin else self.key, method, path, body)

    def own(self, provider: str, values: dict) -> dict:
        status, body = self.call("PUT", f"/api/v1/credentials/{provider}", {"values": values}, admin=True)
        assert status in (200, 201), body
        return body

    def recipient(self) -> str:
        user = f"{self.row.name}-{len(self.users)}"
        status, body = self.call("PUT", f"/api/v1/recipients/{user}", {"phone": f"+1415556{secrets.randbelow(10**4):04d}"})
        assert status == 201, body
        status, body = self.call("POST", f"/api/v1/recipients/{user}/devices",
                                 {"platform": "ios", "token": secrets.token_hex(32)})
        assert status == 201, body
        self.users.append(user)
        return user

    def send(self, user: str) -> str:
        status, body = self.call("POST", "/api/v1/notifications", {
            "recipient": user, "channels": ["apns", "sms"], "content": {"push": {"title": "hi"}, "sms": {"body": "hi"}}})
        assert status == 202, body
        return body["id"]

    def sent(self, notification_ids) -> dict[str, str]:
        """Delivery id → channel of the notifications, once every delivery reached its provider."""
        out = {}
        for notification_id in notification_ids:
            final = wait_final(self.stack, self.key, notification_id, timeout=60)
            assert {d["status"] for d in final["deliveries"]} <= REACHED_PROVIDER, final
            out.update({d["id"]: d["channel"] for d in final["deliveries"]})
        return out


def seen(control, deliveries: dict[str, str]) -> set[tuple]:
    """The credentials the sandbox saw on each accepted request for ``deliveries``: APNs (key id,
    team, topic), Twilio (account SID, From)."""
    found = set()
    for provider, channel in (("apns", "apns"), ("twilio", "sms")):
        for record in control.records(provider, accepted=True):
            if deliveries.get(record.get("delivery_id")) == channel:
                found.add((channel, record["extra"]["key_id"], record["extra"]["team_id"], record["headers"]["apns-topic"])
                          if channel == "apns" else (channel, record["extra"]["account_sid"], record["body"]["From"]))
    return found


@pytest.fixture
def tenants(stack, control):
    a, b = App(stack, "creds-a"), App(stack, "creds-b")
    key, account = ApnsKey.new(), TwilioAccount.new(from_number="+15005550099")
    key.register(control, topic=B_TOPIC)
    account.register(control)
    assert b.own("apns", key.values(B_TOPIC))["secrets"] == ["key"]
    assert b.own("twilio", account.values())["secrets"] == ["auth_token"]
    return a, b, key, account


def test_two_apps_sending_at_once_each_with_its_own_credentials(stack, control, tenants):
    a, b, key, account = tenants
    config = control.config()
    users = {app: [app.recipient() for _ in range(3)] for app in (a, b)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {app: [pool.submit(app.send, users[app][n % 3]) for n in range(ROUNDS)] for app in (a, b)}
        sent = {app: [f.result() for f in futures[app]] for app in (a, b)}
    deliveries = {app: app.sent(sent[app]) for app in (a, b)}
    assert all(len(d) == 2 * ROUNDS for d in deliveries.values())

    assert seen(control, deliveries[a]) == {
        ("apns", config["apns"]["key_id"], config["apns"]["team_id"], config["apns"]["topic"]),
        ("sms", config["twilio"]["account_sid"], config["twilio"]["from_number"])}
    assert seen(control, deliveries[b]) == {("apns", key.key_id, key.team_id, B_TOPIC),
                                            ("sms", account.account_sid, account.from_number)}
    # B's account signed its status callbacks; its own token verified them at the API.
    sms = [d for d, channel in deliveries[b].items() if channel == "sms"]
    wait_until(lambda: set(Delivery.objects.filter(id__in=sms).values_list("status", flat=True)) == {"delivered"},
               timeout=30, message="app B's SMS reported delivered through its own account's callbacks")


def test_credentials_changed_through_the_api_are_used_by_the_next_send(stack, control, tenants):
    a, b, key, account = tenants
    user = b.recipient()
    first = b.sent([b.send(user)])
    assert seen(control, first) == {("apns", key.key_id, key.team_id, B_TOPIC),
                                    ("sms", account.account_sid, account.from_number)}

    new_key, new_account = ApnsKey.new(), TwilioAccount.new(from_number="+15005550098")
    new_key.register(control, topic=B_TOPIC)
    new_account.register(control)
    assert b.own("apns", new_key.values(B_TOPIC))["version"] == 2
    assert b.own("twilio", new_account.values())["version"] == 2

    # Every send after the change, whichever worker process takes it, carries the new ones.
    after = b.sent([b.send(user) for _ in range(4)])
    assert seen(control, after) == {("apns", new_key.key_id, new_key.team_id, B_TOPIC),
                                    ("sms", new_account.account_sid, new_account.from_number)}

    status, _ = b.call("DELETE", "/api/v1/credentials/apns", admin=True)
    assert status == 204
    config = control.config()
    back = b.sent([b.send(user)])
    assert ("apns", config["apns"]["key_id"], config["apns"]["team_id"], config["apns"]["topic"]) in seen(control, back)

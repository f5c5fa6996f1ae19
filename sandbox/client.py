"""Small client of the sandbox control API, for tests and scripts.

    ctl = SandboxControl("http://127.0.0.1:9400")     # or SandboxControl.from_dir("var/sandbox")
    ctl.clear(); ctl.add_fault(provider="apns", status=503, count=1)
    rec = ctl.wait_for("apns", lambda r: r["delivery_id"] == did, timeout=5)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx


class SandboxError(RuntimeError):
    """The control API answered an error (message = its body)."""


class SandboxControl:
    """Thin synchronous wrapper over the control API (sandbox/README.md)."""

    def __init__(self, control_url: str, timeout: float = 10.0) -> None:
        self.url = control_url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    @classmethod
    def from_dir(cls, directory: str | Path) -> "SandboxControl":
        """Read ``control_url`` from ``<directory>/sandbox.json``."""
        doc = json.loads((Path(directory) / "sandbox.json").read_text())
        return cls(doc["control_url"])

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._http.request(method, path, **kw)
        if resp.status_code >= 400:
            raise SandboxError(f"{method} {path}: {resp.status_code} {resp.text}")
        return resp.json()

    def close(self) -> None:
        self._http.close()

    def health(self) -> bool:
        """True when the sandbox answers ``/health``."""
        try:
            return bool(self._call("GET", "/health").get("ok"))
        except (httpx.HTTPError, SandboxError):
            return False

    def config(self) -> dict[str, Any]:
        """The ``sandbox.json`` document."""
        return self._call("GET", "/config")

    def records(self, provider: str | None = None, *, since: int | None = None,
                accepted: bool | None = None, to: str | None = None,
                delivery_id: str | None = None) -> list[dict[str, Any]]:
        """Records matching the filters, oldest first (``since`` is an exclusive seq)."""
        return self.records_page(provider, since=since, accepted=accepted, to=to,
                                 delivery_id=delivery_id)["records"]

    def records_page(self, provider: str | None = None, **filters: Any) -> dict[str, Any]:
        """``{"records": [...], "last_seq": n}``."""
        params = {"provider": provider, **filters}
        params = {k: (str(v).lower() if isinstance(v, bool) else v)
                  for k, v in params.items() if v is not None}
        return self._call("GET", "/records", params=params)

    def last_seq(self) -> int:
        """The seq of the latest record (use as ``since`` to see only newer ones)."""
        return self._call("GET", "/records", params={"since": 2**62})["last_seq"]

    def clear(self) -> None:
        """Forget all records."""
        self._call("DELETE", "/records")

    def inbox(self, provider: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        """Messages the device/phone/mailbox shows (after collapse rules)."""
        params = {k: v for k, v in (("provider", provider), ("to", to)) if v}
        return self._call("GET", "/inbox", params=params)["messages"]

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        """Add a fault rule (fields: sandbox/faults.py); returns it with its ``id``."""
        return self._call("POST", "/faults", json=rule)

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")["faults"]

    def delete_fault(self, rule_id: int) -> None:
        self._call("DELETE", f"/faults/{rule_id}")

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def create_subscription(self, application_server_key: str | None | Any = ...) -> dict:
        """A browser-like Web Push subscription ``{"endpoint", "keys": {"p256dh", "auth"}}``.

        By default bound to the sandbox VAPID key; pass None for an unrestricted one."""
        body = {} if application_server_key is ... else {
            "application_server_key": application_server_key}
        return self._call("POST", "/webpush/subscriptions", json=body)

    def kill_token(self, provider: str, token: str) -> dict[str, Any]:
        """Declare a token (APNs/FCM) or subscription endpoint (Web Push) dead."""
        return self._call("POST", "/dead-tokens", json={"provider": provider, "token": token})

    def revive_tokens(self) -> None:
        self._call("DELETE", "/dead-tokens")

    def twilio_messages(self) -> dict[str, Any]:
        """``{"messages", "callbacks", "opted_out"}`` of the Twilio emulator."""
        return self._call("GET", "/twilio/messages")

    def twilio_inbound(self, sender: str, body: str, url: str, to: str | None = None) -> dict:
        """Post a signed inbound SMS (e.g. ``STOP``) to the product's webhook ``url``."""
        payload = {"from": sender, "body": body, "url": url}
        if to:
            payload["to"] = to
        return self._call("POST", "/twilio/inbound", json=payload)

    def sns_subscribe(self, endpoint: str, signature_version: str = "1") -> dict[str, Any]:
        """Subscribe ``endpoint`` to the SNS stand-in's topic (it gets a signed
        ``SubscriptionConfirmation``); returns the subscription, ``status`` ``confirmed`` when
        the endpoint confirmed it meanwhile, and ``confirmation`` (the POST and its answer)."""
        return self._call("POST", "/sns/subscriptions",
                          json={"endpoint": endpoint, "signature_version": signature_version})

    def sns_subscriptions(self) -> list[dict[str, Any]]:
        return self._call("GET", "/sns/subscriptions")["subscriptions"]

    def sns_unsubscribe_all(self) -> int:
        """Delete every subscription (each gets an ``UnsubscribeConfirmation``); how many."""
        return self._call("DELETE", "/sns/subscriptions")["deleted"]

    def sns_deliveries(self) -> list[dict[str, Any]]:
        """The SNS messages POSTed to subscriptions (latest 1000), with the endpoints' answers."""
        return self._call("GET", "/sns/deliveries")["deliveries"]

    def ses_event(self, event_type: str, *, message_id: str | None = None, delivery_id: str | None = None,
                  **options: Any) -> dict[str, Any]:
        """Publish an SES event about an accepted mail (``options``: ``format``, ``repeat``,
        ``bounce_type``, ``bounce_subtype``, ``feedback_type``, ``link``, ``reason``,
        ``delay_type``); returns ``{"message_id", "deliveries"}``."""
        body = {"event_type": event_type, "message_id": message_id, "delivery_id": delivery_id, **options}
        return self._call("POST", "/ses/events", json={k: v for k, v in body.items() if v is not None})

    def apns_tokens(self) -> dict[str, Any]:
        """APNs provider tokens seen per key id: ``{"strict", "min_interval", "keys": {kid:
        {"tokens": [{"token", "iat", "first_seen", "last_seen", "requests", "refused"}],
        "current", "changes", "refused_updates", "expired"}}}``."""
        return self._call("GET", "/apns/provider-tokens")

    def clear_apns_tokens(self) -> None:
        """Forget the APNs provider tokens seen (the policy stays)."""
        self._call("DELETE", "/apns/provider-tokens")

    def apns_token_policy(self, strict: bool, min_interval: float = 1200) -> dict[str, Any]:
        """Strict mode on or off: a key whose token changes within ``min_interval`` seconds of
        the last change gets 429 ``TooManyProviderTokenUpdates``."""
        return self._call("PUT", "/apns/token-policy",
                          json={"strict": strict, "min_interval": min_interval})

    def add_apns_key(self, key_id: str, team_id: str, public_key_pem: str, topic: str | None = None) -> dict[str, Any]:
        """Accept provider tokens of another APNs key too (a second app's): ``{"key_id",
        "team_id", "topic"}``; records of requests it signed have ``extra.key_id``."""
        body = {"key_id": key_id, "team_id": team_id, "public_key": public_key_pem}
        return self._call("POST", "/apns/keys", json={**body, **({"topic": topic} if topic else {})})

    def add_twilio_account(self, account_sid: str, auth_token: str, from_number: str | None = None,
                           messaging_service_sid: str | None = None, api_key_sid: str | None = None,
                           api_key_secret: str | None = None) -> dict[str, Any]:
        """Accept another Twilio account (a second app's), optionally with an API key: ``{"account_sid",
        "api_key_sid", "from_number", "messaging_service_sid"}``; records of its requests have
        ``extra.account_sid`` and ``extra.auth`` (``"auth_token"`` or ``"api_key:SK…"``)."""
        body = {"account_sid": account_sid, "auth_token": auth_token, "from_number": from_number,
                "messaging_service_sid": messaging_service_sid, "api_key_sid": api_key_sid,
                "api_key_secret": api_key_secret}
        return self._call("POST", "/twilio/accounts", json={k: v for k, v in body.items() if v})

    def accounts(self) -> dict[str, Any]:
        """``{"apns_keys": [...], "twilio_accounts": [...]}``: the sandbox's own and the added."""
        return self._call("GET", "/accounts")

    def wait_for(self, provider: str, predicate: Callable[[dict], bool] | None = None,
                 timeout: float = 5.0, *, since: int | None = None,
                 interval: float = 0.02) -> dict[str, Any]:
        """First record of ``provider`` (after seq ``since``) satisfying ``predicate``.

        Raises:
            TimeoutError: nothing matched within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        cursor = since
        while True:
            page = self.records_page(provider, since=cursor)
            for rec in page["records"]:
                if predicate is None or predicate(rec):
                    return rec
            if page["records"]:
                cursor = page["records"][-1]["seq"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching {provider} record within {timeout}s")
            time.sleep(interval)

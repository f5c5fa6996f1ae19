"""The APNs keys and Twilio accounts the sandbox accepts: the throw-away ones of
``sandbox.json`` and any registered at run time through the control API (``POST /apns/keys``,
``POST /twilio/accounts``), so a second app can send with credentials of its own and a test can
prove from the records which credentials each request carried (APNs records name the key id,
Twilio records the account SID and whether its auth token or an API key authenticated).

Registered extras live in memory only (a restart forgets them); the ``sandbox.json`` ones are
always there.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_TEN = re.compile(r"^[A-Z0-9]{10}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-f]{32}$")
_API_KEY_SID = re.compile(r"^SK[0-9a-f]{32}$")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")


class AccountError(ValueError):
    """A registration the control API refuses (400 with the message)."""


@dataclass(frozen=True)
class ApnsKey:
    """An APNs token-signing key: provider tokens with header ``kid`` = ``key_id`` must be signed
    by it and carry ``iss`` = ``team_id``; ``topic`` is the bundle id its pushes may name."""

    key_id: str
    team_id: str
    public_key: Any
    topic: str

    def as_dict(self) -> dict[str, str]:
        return {"key_id": self.key_id, "team_id": self.team_id, "topic": self.topic}


@dataclass(frozen=True)
class TwilioAccount:
    """A Twilio account: HTTP Basic ``account_sid:auth_token``, or ``api_key_sid:api_key_secret``
    with its API key when it has one; its one sender number and Messaging Service; its status
    callbacks are signed with its auth token (whichever credential sent the message)."""

    account_sid: str
    auth_token: str
    from_number: str
    messaging_service_sid: str
    api_key_sid: str | None = None
    api_key_secret: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """Without the auth token and the API key's secret."""
        return {"account_sid": self.account_sid, "api_key_sid": self.api_key_sid,
                "from_number": self.from_number, "messaging_service_sid": self.messaging_service_sid}


class Accounts:
    """The keys and accounts, by APNs key id and by Twilio account SID. Thread-safe."""

    def __init__(self, creds) -> None:
        self._lock = threading.Lock()
        self.default_apns = ApnsKey(creds.apns_key_id, creds.apns_team_id, creds.apns_public_key, creds.apns_topic)
        self.default_twilio = TwilioAccount(creds.twilio_account_sid, creds.twilio_auth_token, creds.twilio_from,
                                            creds.twilio_messaging_service_sid, creds.twilio_api_key_sid,
                                            creds.twilio_api_key_secret)
        self._apns = {self.default_apns.key_id: self.default_apns}
        self._twilio = {self.default_twilio.account_sid: self.default_twilio}
        #: API key SID → the account it belongs to
        self._twilio_keys = {creds.twilio_api_key_sid: self.default_twilio}

    def apns_key(self, key_id: str | None) -> ApnsKey | None:
        return self._apns.get(key_id or "")

    def twilio_account(self, account_sid: str | None) -> TwilioAccount | None:
        return self._twilio.get(account_sid or "")

    def twilio_login(self, user: str, password: str) -> tuple[TwilioAccount, str] | None:
        """The account HTTP Basic ``user:password`` authenticates, and which credential did
        (``"auth_token"``, or ``"api_key:<SK…>"`` for an API key of the account); None when
        neither an account SID with its auth token nor an API key with its secret."""
        with self._lock:
            if user.startswith("SK"):
                account = self._twilio_keys.get(user)
                secret, credential = (account.api_key_secret if account else None), f"api_key:{user}"
            else:
                account = self._twilio.get(user)
                secret, credential = (account.auth_token if account else None), "auth_token"
        if account is None or not secret or not secrets.compare_digest(password.encode(), secret.encode()):
            return None
        return account, credential

    def add_apns_key(self, body: Any) -> ApnsKey:
        """Register ``{"key_id", "team_id", "public_key" (PEM), "topic"?}`` (topic: the
        sandbox's by default).

        Raises:
            AccountError: a field missing or malformed, or the key id taken by another key.
        """
        body = _object(body)
        key_id, team_id = body.get("key_id"), body.get("team_id")
        if not isinstance(key_id, str) or not _TEN.match(key_id):
            raise AccountError("key_id must be 10 characters A-Z 0-9")
        if not isinstance(team_id, str) or not _TEN.match(team_id):
            raise AccountError("team_id must be 10 characters A-Z 0-9")
        try:
            public_key = serialization.load_pem_public_key(str(body.get("public_key") or "").encode())
        except ValueError:
            raise AccountError("public_key must be a PEM public key") from None
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise AccountError("public_key must be an EC P-256 key (APNs signs ES256)")
        topic = body.get("topic") or self.default_apns.topic
        if not isinstance(topic, str):
            raise AccountError("topic must be a bundle id")
        key = ApnsKey(key_id, team_id, public_key, topic)
        with self._lock:
            if key_id == self.default_apns.key_id:
                raise AccountError("key_id is the sandbox's own key")
            self._apns[key_id] = key
        return key

    def add_twilio_account(self, body: Any) -> TwilioAccount:
        """Register ``{"account_sid", "auth_token", "api_key_sid"?, "api_key_secret"?,
        "from_number"?, "messaging_service_sid"?}`` (the sandbox's sender and a new service by
        default; an API key, both fields or neither, authenticates as the account too). The
        same SID again replaces the account (and drops its earlier API key).

        Raises:
            AccountError: a field missing or malformed, the SID is the sandbox's own, or the API
                key SID is another account's.
        """
        body = _object(body)
        sid, token = body.get("account_sid"), body.get("auth_token")
        if not isinstance(sid, str) or not _ACCOUNT_SID.match(sid):
            raise AccountError("account_sid must be AC and 32 lower-case hex digits")
        if not isinstance(token, str) or not token:
            raise AccountError("auth_token is required")
        sender = body.get("from_number") or self.default_twilio.from_number
        if not isinstance(sender, str) or not _E164.match(sender):
            raise AccountError("from_number must be E.164")
        service = body.get("messaging_service_sid") or "MG" + sid[2:]
        if not isinstance(service, str) or not _SERVICE_SID.match(service):
            raise AccountError("messaging_service_sid must be MG and 32 lower-case hex digits")
        key_sid, key_secret = body.get("api_key_sid") or None, body.get("api_key_secret") or None
        if (key_sid is None) != (key_secret is None):
            raise AccountError("api_key_sid and api_key_secret go together")
        if key_sid is not None and (not isinstance(key_sid, str) or not _API_KEY_SID.match(key_sid)):
            raise AccountError("api_key_sid must be SK and 32 lower-case hex digits")
        if key_secret is not None and not isinstance(key_secret, str):
            raise AccountError("api_key_secret must be a string")
        account = TwilioAccount(sid, token, sender, service, key_sid, key_secret)
        with self._lock:
            if sid == self.default_twilio.account_sid:
                raise AccountError("account_sid is the sandbox's own account")
            owner = self._twilio_keys.get(key_sid or "")
            if owner is not None and owner.account_sid != sid:
                raise AccountError("api_key_sid is another account's key")
            previous = self._twilio.get(sid)
            if previous is not None and previous.api_key_sid:
                self._twilio_keys.pop(previous.api_key_sid, None)
            self._twilio[sid] = account
            if key_sid:
                self._twilio_keys[key_sid] = account
        return account

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        """``{"apns_keys": [...], "twilio_accounts": [...]}`` (no auth tokens, no API key
        secrets), the sandbox's own first."""
        return {"apns_keys": [k.as_dict() for k in self._apns.values()],
                "twilio_accounts": [a.as_dict() for a in self._twilio.values()]}


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise AccountError("a JSON object is expected")
    return body

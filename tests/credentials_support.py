"""Credentials of a second app for the per-app credentials tests: a fresh APNs key and Twilio
account (random, throw-away), the API client of an app key with the ``admin`` scope, and
registering them with a provider sandbox so it accepts them."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rest_framework.test import APIClient


def _ten() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(10))


@dataclass(frozen=True)
class ApnsKey:
    key_id: str
    team_id: str
    private_pem: str
    public_pem: str

    @classmethod
    def new(cls) -> "ApnsKey":
        key = ec.generate_private_key(ec.SECP256R1())
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return cls(_ten(), _ten(), private, public)

    def values(self, topic: str) -> dict[str, str]:
        """The app's own APNs settings for the API."""
        return {"key": self.private_pem, "key_id": self.key_id, "team_id": self.team_id, "topic": topic}

    @property
    def secret_part(self) -> str:
        """A line of the key's body: what must never be shown."""
        return self.private_pem.splitlines()[1]

    def register(self, control, topic: str | None = None) -> None:
        control.add_apns_key(self.key_id, self.team_id, self.public_pem, topic)


@dataclass(frozen=True)
class TwilioAccount:
    account_sid: str
    auth_token: str
    from_number: str
    api_key_sid: str | None = None
    api_key_secret: str | None = None

    @classmethod
    def new(cls, from_number: str = "+15005550006", api_key: bool = False) -> "TwilioAccount":
        """A fresh account; ``api_key``: with an API key (``SK…`` and its secret) too."""
        key = ("SK" + secrets.token_hex(16), secrets.token_urlsafe(24)) if api_key else (None, None)
        return cls("AC" + secrets.token_hex(16), secrets.token_hex(16), from_number, *key)

    def values(self) -> dict[str, str]:
        """The app's own Twilio settings for the API (the API key's too when it has one)."""
        key = {"api_key_sid": self.api_key_sid, "api_key_secret": self.api_key_secret} if self.api_key_sid else {}
        return {"account_sid": self.account_sid, "auth_token": self.auth_token, **key, "from_number": self.from_number}

    def register(self, control) -> None:
        control.add_twilio_account(self.account_sid, self.auth_token, self.from_number,
                                   api_key_sid=self.api_key_sid, api_key_secret=self.api_key_secret)


def admin_client(app) -> APIClient:
    """An API client of ``app`` whose key holds the ``admin`` scope."""
    from notify.models import AppAPIKey

    _, key = AppAPIKey.objects.create_key(name=f"{app.name} admin", app=app, scopes=["admin"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client

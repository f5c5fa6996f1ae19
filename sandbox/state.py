"""Shared run-time state of one sandbox process: credentials, records, faults, dead tokens,
Web Push subscriptions."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric import ec

from .accounts import Accounts
from .credentials import Credentials, b64url, b64url_decode, ec_public_raw
from .faults import FaultStore
from .ports import normalize_host
from .provider_tokens import ProviderTokens
from .records import RecordStore

DEAD_TOKEN_PROVIDERS = ("apns", "fcm", "webpush")


class DeadTokens:
    """Tokens declared dead through ``POST /dead-tokens``; remembers when (epoch ms)."""

    def __init__(self) -> None:
        self._dead: dict[str, dict[str, int]] = {p: {} for p in DEAD_TOKEN_PROVIDERS}

    def kill(self, provider: str, token: str) -> int:
        """Mark ``token`` dead; returns the timestamp (ms) APNs reports in its 410 answer.
        Raises ``ValueError`` for an unknown provider."""
        if provider not in self._dead:
            raise ValueError(f"provider must be one of {list(DEAD_TOKEN_PROVIDERS)}")
        ms = int(time.time() * 1000)
        self._dead[provider].setdefault(token, ms)
        return self._dead[provider][token]

    def dead_since(self, provider: str, token: str | None) -> int | None:
        """Epoch ms when ``token`` died, or None when it is alive."""
        if token is None:
            return None
        return self._dead.get(provider, {}).get(token)

    def revive(self, provider: str | None = None) -> None:
        """Forget dead tokens (of one provider or all)."""
        for p, tokens in self._dead.items():
            if provider in (None, p):
                tokens.clear()

    def as_dict(self) -> dict[str, list[str]]:
        return {p: sorted(t) for p, t in self._dead.items()}


@dataclass
class Subscription:
    """A browser-like Web Push subscription held by the push service.

    Attributes:
        id: the path id in ``/wp/<id>``.
        private_key: the browser's EC P-256 key (``cryptography`` object) used to decrypt.
        p256dh: the public key, base64url uncompressed point.
        auth: the 16-byte auth secret, base64url.
        application_server_key: VAPID public key (base64url) the subscription is bound to, or
            None for an unrestricted subscription (RFC 8292 §4: then any valid VAPID key passes).
    """

    id: str
    private_key: Any
    p256dh: str
    auth: str
    application_server_key: str | None
    created: float


class Subscriptions:
    """Web Push subscriptions, persisted in ``<dir>/webpush_subscriptions.json`` so a restart
    keeps the product's stored endpoints valid."""

    def __init__(self, directory: Path) -> None:
        self._file = Path(directory) / "webpush_subscriptions.json"
        self._subs: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        if self._file.exists():
            for item in json.loads(self._file.read_text()):
                key = ec.derive_private_key(int(item["d"]), ec.SECP256R1())
                self._subs[item["id"]] = Subscription(
                    item["id"], key, item["p256dh"], item["auth"],
                    item.get("application_server_key"), item.get("created", 0.0))

    def create(self, application_server_key: str | None) -> Subscription:
        """Generate a subscription like a browser does: a P-256 key pair and 16 random bytes."""
        key = ec.generate_private_key(ec.SECP256R1())
        sub = Subscription(
            id=secrets.token_urlsafe(24), private_key=key,
            p256dh=b64url(ec_public_raw(key.public_key())), auth=b64url(os.urandom(16)),
            application_server_key=application_server_key, created=time.time())
        with self._lock:
            self._subs[sub.id] = sub
            self._save()
        return sub

    def get(self, sub_id: str) -> Subscription | None:
        return self._subs.get(sub_id)

    def _save(self) -> None:
        data = [{"id": s.id, "d": str(s.private_key.private_numbers().private_value),
                 "p256dh": s.p256dh, "auth": s.auth,
                 "application_server_key": s.application_server_key, "created": s.created}
                for s in self._subs.values()]
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._file)


class SandboxState:
    """Everything the provider apps and the control API share.

    Attributes:
        creds: :class:`~sandbox.credentials.Credentials` (keys, ids, ports).
        records / faults / dead / subscriptions: the stores.
        apns_tokens: APNs provider tokens seen per key, and the strict one-token-per-key rule
            (:class:`~sandbox.provider_tokens.ProviderTokens`).
        accounts: the APNs keys and Twilio accounts accepted, the sandbox's own and those
            registered through the control API (:class:`~sandbox.accounts.Accounts`).
        callback_delays: seconds before Twilio's ``sent`` and ``delivered`` callbacks.
        callback_hosts: host names / IPs (normalized) that Twilio callbacks and SNS
            subscriptions may be POSTed to besides loopback (``--callback-hosts``).
    """

    def __init__(self, creds: Credentials, callback_delays: tuple[float, float] = (0.05, 0.15),
                 callback_hosts: Iterable[str] = ()):
        self.creds = creds
        self.ports = creds.ports
        self.records = RecordStore(creds.directory / "records")
        self.faults = FaultStore()
        self.dead = DeadTokens()
        self.subscriptions = Subscriptions(creds.directory)
        self.apns_tokens = ProviderTokens()
        self.accounts = Accounts(creds)
        self.callback_delays = callback_delays
        self.callback_hosts: frozenset[str] = frozenset(normalize_host(h) for h in callback_hosts)
        self.opted_out: set[str] = set()  # Twilio numbers that answered STOP
        self.twilio = None  # set by the Twilio app (message store for GET)
        self.sns = None  # set by sandbox.sns.SnsTopic (subscriptions, message log)
        self.ses_events = None  # set by sandbox.ses_events.SesEvents (SES event publishing)
        self.loop = None  # the server's event loop, for work handed over from the SMTP thread
        self.started = time.time()

    def webpush_endpoint(self, sub_id: str) -> str:
        return f"{self.ports.https(self.ports.webpush)}/wp/{sub_id}"

    def webpush_id(self, token: str) -> str:
        """The subscription id of an endpoint URL (or an id given as is)."""
        if "/wp/" in token:
            return token.rsplit("/wp/", 1)[1].split("?")[0]
        return token


def decode_raw_point(text: str):
    """EC P-256 public key from a base64url uncompressed point. Raises ``ValueError``."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(text))

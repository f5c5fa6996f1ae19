"""Encryption at rest of the apps' own provider credentials: ``cryptography``'s MultiFernet.

The keys are ``settings.NOTIFY_CREDENTIAL_KEYS`` (the environment's ``NOTIFY_CREDENTIAL_KEYS``,
comma-separated Fernet keys, read in ``settings/`` only): the first one encrypts, every one
decrypts. Rotating: put a new key first and keep the old ones, restart, run ``manage.py
rotate_credential_keys`` (re-encrypts every row with the first key, :func:`reseal`), then drop
the old keys. While it runs, rows sealed with either key open, so nothing stops sending.

A sealed value is one Fernet token (URL-safe base64 text: AES-128-CBC and HMAC-SHA256 over a
version byte, a timestamp and an IV): authenticated, so a changed or truncated token opens to
nothing rather than to wrong credentials.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SealError(Exception):
    """A sealed value that none of the configured keys opens (a key dropped before the rows were
    re-encrypted, or a changed token). The message never holds the value."""


@lru_cache(maxsize=4)
def _keys(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    # Cached per key list: settings overridden in a test get their own.
    fernets = [Fernet(key) for key in keys]
    return MultiFernet(fernets), fernets[0]


def _current() -> tuple[MultiFernet, Fernet]:
    return _keys(tuple(settings.NOTIFY_CREDENTIAL_KEYS))


def seal(values: Mapping[str, Any]) -> str:
    """``values`` (JSON-able: setting key → text) as one token sealed with the first key."""
    data = json.dumps(dict(values), sort_keys=True, separators=(",", ":")).encode()
    return _current()[0].encrypt(data).decode("ascii")


def unseal(token: str) -> dict[str, Any]:
    """The values :func:`seal` sealed in ``token``, opened with whichever key sealed it.

    Raises:
        SealError: no configured key opens it.
    """
    try:
        return json.loads(_current()[0].decrypt(token.encode("ascii")))
    except (InvalidToken, UnicodeEncodeError, ValueError):
        raise SealError("no key of NOTIFY_CREDENTIAL_KEYS opens this sealed value") from None


def is_current(token: str) -> bool:
    """True when ``token`` is sealed with the first key (nothing for a rotation to do)."""
    try:
        _current()[1].decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError):
        return False
    return True


def reseal(token: str) -> str:
    """``token``'s values sealed again with the first key (MultiFernet.rotate).

    Raises:
        SealError: no configured key opens it.
    """
    try:
        return _current()[0].rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeEncodeError):
        raise SealError("no key of NOTIFY_CREDENTIAL_KEYS opens this sealed value") from None

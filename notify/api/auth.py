"""API-key authentication: ``Authorization: Api-Key <key>``, keys stored hashed by
djangorestframework-api-key. The key row (found by the key's public prefix) comes from the Redis
cache (notify.cache.load_api_key); the secret is verified against its hash on every request."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions

from ..cache import load_api_key
from ..models import AppAPIKey

KEYWORD = "Api-Key"
_GENERATOR = AppAPIKey.objects.key_generator
#: The shape djangorestframework-api-key gives keys: public prefix, a dot, secret.
_KEY_SHAPE = re.compile(rf"[A-Za-z0-9]{{{_GENERATOR.prefix_length}}}\.[A-Za-z0-9]{{{_GENERATOR.secret_key_length}}}")


@dataclass(frozen=True)
class AppPrincipal:
    """The authenticated caller: an app, through one of its API keys, with the key's scopes
    (names of notify.scopes.SCOPES; checked by notify.api.permissions.HasRequiredScope)."""

    app_id: int
    key_id: str
    scopes: frozenset[str] = frozenset()
    is_authenticated: bool = True


class AppAPIKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates with an app's API key; 401 when missing, malformed, unknown, revoked or expired."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _, key = header.partition(" ")
        if keyword != KEYWORD or not key.strip():
            raise exceptions.AuthenticationFailed("expected 'Authorization: Api-Key <key>'", code="invalid_api_key")
        key = key.strip()
        if not _KEY_SHAPE.fullmatch(key):
            # Checked before any look-up, so made-up keys cost neither Redis nor PostgreSQL.
            raise exceptions.AuthenticationFailed("unknown or revoked API key", code="invalid_api_key")
        row = load_api_key(key.partition(".")[0])
        if (row is None or row["revoked"]
                or (row["expiry_date"] is not None and row["expiry_date"] < timezone.now())
                or not _GENERATOR.verify(key, row["hashed_key"])):
            raise exceptions.AuthenticationFailed("unknown or revoked API key", code="invalid_api_key")
        principal = AppPrincipal(app_id=row["app_id"], key_id=row["id"], scopes=frozenset(row["scopes"]))
        return principal, principal

    def authenticate_header(self, request):
        return KEYWORD

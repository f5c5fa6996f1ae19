"""The API's authentication: an app's API key or an OAuth2 access token, told apart by the
``Authorization`` header's keyword before anything is looked up; either way the request's
``user`` is an :class:`AppPrincipal`, so the scope checks (notify.api.permissions) and each
view's look-ups in the caller's app work alike.

- ``Authorization: Api-Key <key>``: keys stored hashed by djangorestframework-api-key. The key
  row (found by the key's public prefix) comes from the Redis cache (notify.cache.load_api_key);
  the secret is verified against its hash on every request. Touches no OAuth table.
- ``Authorization: Bearer <token>``: a token of the client credentials grant (notify.oauth),
  read by one indexed query on every request (notify.oauth.load_token), so a revoked token, a
  disabled or deleted client is refused from the next request: 401 ``invalid_token``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions

from .. import oauth
from ..cache import load_api_key
from ..models import AppAPIKey

KEYWORD = "Api-Key"
BEARER = "bearer"  # compared lower-cased: an authentication scheme is case-insensitive (RFC 9110)
#: RFC 6750's b64token, at most 255 characters: anything else is refused before the look-up.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9\-._~+/]{1,255}=*")
_GENERATOR = AppAPIKey.objects.key_generator
#: The shape djangorestframework-api-key gives keys: public prefix, a dot, secret.
_KEY_SHAPE = re.compile(rf"[A-Za-z0-9]{{{_GENERATOR.prefix_length}}}\.[A-Za-z0-9]{{{_GENERATOR.secret_key_length}}}")


def credentials(header: str) -> tuple[str, str]:
    """``(scheme, credential)`` of an ``Authorization`` header value: the word before the first
    space, and the rest without surrounding whitespace (``"Api-Key  abc "`` gives ``("Api-Key",
    "abc")``). One reading for the authenticators and the rate limit's bucket, so no spelling of
    one key authenticates under a bucket of its own."""
    scheme, _, credential = header.partition(" ")
    return scheme, credential.strip()


def rate_limit_bucket(header: str) -> str:
    """The API rate limit's bucket of a request, from its ``Authorization`` header before any
    look-up: the scheme lower-cased (RFC 9110 makes it case-insensitive) and the credential's
    first 32 characters (an API key's public prefix and part of its secret; a token's start)."""
    scheme, credential = credentials(header)
    return f"{scheme.lower()} {credential[:32]}"


@dataclass(frozen=True)
class AppPrincipal:
    """The authenticated caller: an app, through one of its API keys or OAuth clients, with the
    key's or the token's scopes (names of notify.scopes.SCOPES; checked by
    notify.api.permissions.HasRequiredScope).

    ``key_id``: the API key's id, or ``oauth:<client id>`` for a token."""

    app_id: int
    key_id: str
    scopes: frozenset[str] = frozenset()
    is_authenticated: bool = True

    @property
    def api_key_id(self) -> str | None:
        """The API key's id (kept on a notification for audit), None for an OAuth client."""
        return None if self.key_id.startswith(oauth.KEY_ID_PREFIX) else self.key_id


class InvalidToken(exceptions.AuthenticationFailed):
    """401 ``invalid_token`` (notify.api.errors): an unknown, expired or revoked OAuth2 access
    token, or one of a disabled or deleted client."""

    default_code = "invalid_token"


class AppAPIKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates with an app's API key; 401 when missing, malformed, unknown, revoked or expired."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, key = credentials(header)
        if keyword.lower() == BEARER:
            return None  # OAuthTokenAuthentication's
        if keyword != KEYWORD or not key:
            raise exceptions.AuthenticationFailed("expected 'Authorization: Api-Key <key>' or 'Bearer <token>'",
                                                  code="invalid_api_key")
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
        # DRF asks the first class only: a refused token is answered as RFC 6750 says.
        if credentials(request.META.get("HTTP_AUTHORIZATION", ""))[0].lower() == BEARER:
            return OAuthTokenAuthentication().authenticate_header(request)
        return KEYWORD


class OAuthTokenAuthentication(authentication.BaseAuthentication):
    """Authenticates with an OAuth2 access token (``Authorization: Bearer <token>``); 401
    ``invalid_token`` when it is unknown, expired or revoked, or its client disabled or deleted.
    Its scopes are the token's that its client still holds (notify.oauth.effective)."""

    def authenticate(self, request):
        keyword, token = credentials(request.META.get("HTTP_AUTHORIZATION", ""))
        if keyword.lower() != BEARER:
            return None
        row = oauth.load_token(token) if _TOKEN_SHAPE.fullmatch(token) else None
        if row is None or row["app_id"] is None or not row["active"] or row["expires"] <= timezone.now():
            raise InvalidToken("unknown, expired or revoked access token")
        principal = AppPrincipal(app_id=row["app_id"], key_id=f"{oauth.KEY_ID_PREFIX}{row['client_id']}",
                                 scopes=oauth.effective(row["scope"].split(), row["client_scopes"]))
        return principal, principal

    def authenticate_header(self, request):
        return 'Bearer realm="api", error="invalid_token"'

"""OAuth2 client credentials for the API, on django-oauth-toolkit (DOT): DOT's token and
revocation endpoints (``/oauth/token/``, ``/oauth/revoke_token/``: notify/urls.py) with the
service's clients (notify.models.OAuthClient) and scopes (notify.scopes), wired in by
``settings.OAUTH2_PROVIDER``:

- :class:`ClientScopes` (``SCOPES_BACKEND_CLASS``): a client may ask for the scopes it holds (every
  scope when it holds ``admin``); asking for none gets all it holds. Asking for more is DOT's
  400 ``invalid_scope``.
- :class:`Validator` (``OAUTH2_VALIDATOR_CLASS``): only an enabled client of an app
  authenticates (401 ``invalid_client`` otherwise), so an application made in DOT's own way,
  without an app, gets no token.

:func:`create_client` makes a client (manage.py create_oauth_client, the admin);
:func:`load_token` is the one query of the API's bearer authentication (notify.api.auth).
"""

from __future__ import annotations

import hashlib

from django.db import transaction
from django.db.models import F
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import AccessToken, Application
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.scopes import BaseScopes

from . import scopes as scope_list
from .models import App, OAuthClient

#: ``AppPrincipal.key_id`` of a request with a token: this, then the client id (a key's id never
#: has a colon).
KEY_ID_PREFIX = "oauth:"


def _client_of(application) -> OAuthClient | None:
    """The enabled OAuthClient of a DOT application, or None."""
    if application is None:
        return None
    try:
        client = application.notify_client
    except OAuthClient.DoesNotExist:
        return None
    return client if client.active else None


def grantable(held) -> list[str]:
    """The scopes a client holding ``held`` may put on a token: all of them with ``admin``."""
    return list(scope_list.SCOPES) if scope_list.ADMIN in held else [s for s in scope_list.SCOPES if s in held]


def effective(token_scopes, client_scopes) -> frozenset[str]:
    """What a request with a token may do: the token's scopes that its client still grants."""
    return frozenset(s for s in token_scopes if s in scope_list.SCOPES and scope_list.grants(client_scopes, s))


class ClientScopes(BaseScopes):
    """DOT's scopes backend: the scopes come from notify.scopes, per client."""

    def get_all_scopes(self):
        return dict(scope_list.SCOPES)

    def get_available_scopes(self, application=None, request=None, *args, **kwargs):
        if application is None:
            return list(scope_list.SCOPES)
        client = _client_of(application)
        return grantable(client.scopes) if client is not None else []

    def get_default_scopes(self, application=None, request=None, *args, **kwargs):
        client = _client_of(application)
        return list(client.scopes) if client is not None else []


class Validator(OAuth2Validator):
    """DOT's validator, where a client authenticates only with an enabled OAuthClient (which
    the scopes backend then reads from the same loaded application)."""

    def authenticate_client(self, request, *args, **kwargs):
        return super().authenticate_client(request, *args, **kwargs) and _client_of(request.client) is not None

    def authenticate_client_id(self, client_id, request, *args, **kwargs):
        return (super().authenticate_client_id(client_id, request, *args, **kwargs)
                and _client_of(request.client) is not None)


def new_application(app: App, name: str = "") -> tuple[Application, str]:
    """The DOT application of a new client of ``app``: confidential, for the client credentials
    grant only (DOT refuses it every other grant), with its secret, which only the returned
    value holds: the row keeps its hash."""
    secret = generate_client_secret()
    application = Application.objects.create(
        name=name or f"{app.name} client", client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS, client_secret=secret,
        hash_client_secret=True, redirect_uris="")
    return application, secret


def create_client(app: App, client_scopes: list[str], name: str = "") -> tuple[OAuthClient, str]:
    """A new client of ``app`` holding ``client_scopes``, with its secret (see :func:`new_application`).

    Raises django's ValidationError for an unknown or repeated scope (nothing is written)."""
    scope_list.validate(client_scopes)
    with transaction.atomic():
        application, secret = new_application(app, name)
        client = OAuthClient.objects.create(application=application, app=app, scopes=list(client_scopes))
    return client, secret


def load_token(token: str) -> dict | None:
    """The access token ``token`` with its client, by one indexed query (DOT stores the token's
    SHA-256 checksum only, ``COMPLIANT_BCP_RFC9700_TOKEN_STORAGE``), no cache: a revocation
    deletes the row, so it holds from the next request.

    Returns ``{"expires": datetime, "scope": "send analytics", "client_id", "app_id",
    "client_scopes": [...], "active": bool}``, ``app_id`` None when the application has no
    OAuthClient; None for an unknown (or revoked) token."""
    checksum = hashlib.sha256(token.encode()).hexdigest()
    rows = list(AccessToken.objects.filter(token_checksum=checksum).values(
        "expires", "scope", client_id=F("application__client_id"), app_id=F("application__notify_client__app_id"),
        client_scopes=F("application__notify_client__scopes"), active=F("application__notify_client__active"))[:1])
    return rows[0] if rows else None

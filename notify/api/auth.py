"""API-key authentication: ``Authorization: Api-Key <key>``, keys stored hashed by
djangorestframework-api-key. One query per request (the key row carries its app id)."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions

from ..models import AppAPIKey

KEYWORD = "Api-Key"


@dataclass(frozen=True)
class AppPrincipal:
    """The authenticated caller: an app, through one of its API keys."""

    app_id: int
    key_id: str
    is_authenticated: bool = True


class AppAPIKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates with an app's API key; 401 when missing, malformed, unknown or revoked."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _, key = header.partition(" ")
        if keyword != KEYWORD or not key.strip():
            raise exceptions.AuthenticationFailed("expected 'Authorization: Api-Key <key>'", code="invalid_api_key")
        try:
            api_key = AppAPIKey.objects.get_from_key(key.strip())
        except AppAPIKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("unknown or revoked API key", code="invalid_api_key") from None
        return AppPrincipal(app_id=api_key.app_id, key_id=api_key.id), api_key

    def authenticate_header(self, request):
        return KEYWORD

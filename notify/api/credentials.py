"""The provider credentials API (``/api/v1/credentials``, the ``admin`` scope): the calling app's
own provider settings (its APNs key, its Twilio account...), which its sends use instead of the
deployment's (notify.credentials has the rules; notify.providers builds the adapters).

``PUT /api/v1/credentials/<provider>`` ``{"values": {"<setting>": "<value>"}}`` replaces the
app's own settings of the provider (a setting left out takes the deployment's value);
``DELETE`` drops them (the app sends with the deployment's again). Answers show the non-secret
values, which secrets are set (never their values), the version (bumped on every change) and
when they changed. Nothing is written unless the provider's adapter could be built with them.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.fields import get_error_detail
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import credentials, scopes
from ..models import ProviderCredential
from . import serializers as s
from .template_serializers import ApiError


class CredentialsIn(s.StrictSerializer):
    """``PUT /api/v1/credentials/<provider>``."""

    values = serializers.DictField(
        child=serializers.JSONField(), allow_empty=True,
        help_text="setting → value (text), the settings the provider's adapter lets an app set; a setting left "
                  "out takes the deployment's value. Secrets (keys, tokens, passwords) are write-only.")


class CredentialsOut(serializers.Serializer):
    provider = serializers.CharField()
    channel = serializers.CharField(allow_null=True)
    values = serializers.DictField(child=serializers.CharField(), help_text="the non-secret values the app sets")
    secrets = serializers.ListField(child=serializers.CharField(),
                                    help_text="the secret settings the app sets (their values are never shown)")
    version = serializers.IntegerField(help_text="bumped on every change; senders rebuild their client on it")
    updated_at = serializers.DateTimeField()
    readable = serializers.BooleanField(help_text="false: no key of NOTIFY_CREDENTIAL_KEYS opens them (PUT them "
                                                  "again)")


NOT_FOUND = OpenApiResponse(ApiError, description="`unknown_provider`: no such provider; `no_credentials`: the "
                                                  "app has none of its own for it (it sends with the deployment's)")
INVALID = OpenApiResponse(ApiError, description="`invalid_request`: a setting the provider does not let an app "
                                                "set, or a value that is not text, by path (`values.key_id`); "
                                                "`invalid_credentials`: the provider's adapter refuses them (the "
                                                "reason in the message); nothing is written")


def _row(request, provider: str) -> ProviderCredential:
    credentials.adapter_class(provider)  # 404 unknown_provider
    row = ProviderCredential.objects.filter(app_id=request.user.app_id, provider=provider).first()
    if row is None:
        raise credentials.CredentialsRefused(
            "no_credentials", f"this app has no {provider} settings of its own: it sends with the deployment's",
            status=404, fields={"provider": ["no settings of its own"]})
    return row


class CredentialsListView(APIView):
    """``GET /api/v1/credentials``: the app's own provider settings, by provider."""

    required_scope = scopes.ADMIN

    @extend_schema(responses={200: CredentialsOut(many=True)})
    def get(self, request):
        rows = ProviderCredential.objects.filter(app_id=request.user.app_id).order_by("provider")
        return Response(CredentialsOut([credentials.describe(row) for row in rows], many=True).data)


class CredentialsDetailView(APIView):
    """``GET``/``PUT``/``DELETE /api/v1/credentials/<provider>``."""

    required_scope = scopes.ADMIN

    @extend_schema(responses={200: CredentialsOut, 404: NOT_FOUND})
    def get(self, request, provider):
        return Response(CredentialsOut(credentials.describe(_row(request, provider))).data)

    @extend_schema(request=CredentialsIn, responses={200: CredentialsOut, 201: CredentialsOut, 400: INVALID,
                                                     404: NOT_FOUND})
    def put(self, request, provider):
        credentials.adapter_class(provider)  # 404 unknown_provider, before the body
        serializer = CredentialsIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            values = credentials.check_values(provider, serializer.validated_data["values"])
        except DjangoValidationError as exc:
            detail = get_error_detail(exc)
            # Problems with the object as a whole are reported at ``values`` itself.
            general = detail.pop("non_field_errors", None)
            raise serializers.ValidationError({"values": general if general and not detail else detail}) from None
        credentials.check_adapter(provider, values)
        row, created = credentials.save(request.user.app_id, provider, values)
        return Response(CredentialsOut(credentials.describe(row)).data, status=201 if created else 200)

    @extend_schema(request=None, responses={204: None, 404: NOT_FOUND})
    def delete(self, request, provider):
        """The app sends with the deployment's settings of the provider again (workers drop its
        own client on their next send)."""
        _row(request, provider).delete()
        return Response(status=204)

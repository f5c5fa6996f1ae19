"""OpenAPI description of the API's two security schemes, an app's API key and OAuth2 client
credentials (drf-spectacular extensions, imported at start-up). Either one admits an operation;
the OAuth2 requirement names the operation's scope (notify.api.permissions)."""

from django.urls import reverse
from drf_spectacular.extensions import OpenApiAuthenticationExtension

from .. import scopes
from .permissions import required_scope


class AppAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "notify.api.auth.AppAPIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Api-Key <key>`: an app's API key"}


class OAuthTokenScheme(OpenApiAuthenticationExtension):
    target_class = "notify.api.auth.OAuthTokenAuthentication"
    name = "OAuth2"

    def get_security_requirement(self, auto_schema):
        return {self.name: [required_scope(auto_schema.view)]}

    def get_security_definition(self, auto_schema):
        return {"type": "oauth2",
                "description": "`Bearer <token>`: an access token of an app's OAuth2 client (client credentials "
                               "grant; `manage.py create_oauth_client`); `admin` grants every scope",
                "flows": {"clientCredentials": {"tokenUrl": reverse("oauth-token"), "scopes": dict(scopes.SCOPES)}}}

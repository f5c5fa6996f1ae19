"""OpenAPI description of the API-key scheme (drf-spectacular extension, imported at start-up)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AppAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "notify.api.auth.AppAPIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Api-Key <key>`: an app's API key"}

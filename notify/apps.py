from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "notify"
    verbose_name = "Notifications"

    def ready(self):
        from . import cache  # noqa: F401  (connects the invalidation signals)
        from .api import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from . import credentials, logmask

        # Fields named as an adapter's secret setting (auth_token, key...) are masked in logs.
        logmask.add_secret_fields(credentials.secret_keys())

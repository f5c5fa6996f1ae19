from django.conf import settings
from django.urls import path

from .base import WebhookView

urlpatterns = [
    path("<slug:provider>/<slug:kind>", WebhookView.as_view(), name="webhook"),
]


def webhook_url(provider: str, kind: str) -> str:
    """The public URL ``provider`` calls for webhooks of ``kind`` (e.g. Twilio status callbacks)."""
    return f"{settings.NOTIFY_PUBLIC_URL.rstrip('/')}/webhooks/{provider}/{kind}"

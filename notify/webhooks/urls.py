from django.conf import settings
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from .base import WebhookView
from .sns import SNSWebhookView, carries_sns

_signed_form = WebhookView.as_view()
_sns = SNSWebhookView.as_view()


@csrf_exempt
def webhook(request, provider: str, kind: str):
    """``POST /webhooks/<provider>/<kind>``: kinds a provider publishes through Amazon SNS go to
    :class:`~notify.webhooks.sns.SNSWebhookView`, the provider's own signed calls to
    :class:`~notify.webhooks.base.WebhookView`."""
    view = _sns if carries_sns(provider, kind) else _signed_form
    return view(request, provider=provider, kind=kind)


urlpatterns = [
    path("<slug:provider>/<slug:kind>", webhook, name="webhook"),
]


def webhook_url(provider: str, kind: str, app_id: int | None = None) -> str:
    """The public URL ``provider`` calls for webhooks of ``kind`` (e.g. Twilio status callbacks);
    with ``app_id`` for a message sent with that app's own provider settings, whose credentials
    sign the calls (``?app=<id>``: the provider signs the URL, so it cannot be changed)."""
    url = f"{settings.NOTIFY_PUBLIC_URL.rstrip('/')}/webhooks/{provider}/{kind}"
    return url if app_id is None else f"{url}?app={app_id}"

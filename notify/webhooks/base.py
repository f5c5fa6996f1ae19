"""The one view every provider webhook goes through: ``POST /webhooks/<provider>/<kind>``.

It verifies the call with the provider's adapter (``verify_webhook``: the signature over the
public URL the provider called), refuses replays, lets the adapter parse the call into
:class:`channels.base.WebhookEvent` values, and reacts to those in the service's terms: a later
status of a message becomes a delivery event (notify.receipts), a recipient's refusal (Twilio
21610, SMS STOP) opts the recipient out of the channel, an opt-in (SMS START) opts back in.

A bad signature is a 403 and changes nothing (the provider must not retry forged calls); a
replay of a call already handled is a 409 and changes nothing; a transient failure of ours is a
5xx so the provider retries.
"""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django_redis import get_redis_connection

from channels import registry
from channels.base import WebhookEvent

from .. import providers, receipts, store
from ..api.errors import error_body
from ..cache import redis_key
from ..models import Delivery, Recipient

#: Seconds a handled webhook call is remembered, so a replay of it is refused.
REPLAY_WINDOW = 24 * 3600


def _seen_key(provider: str, kind: str, url: str, params: dict) -> str:
    """A signed call is identified by what was signed: the same URL and fields again is a replay."""
    digest = hashlib.sha256(repr((provider, kind, url, sorted(params.items()))).encode()).hexdigest()
    return redis_key("webhook", digest)


@method_decorator(csrf_exempt, name="dispatch")
class WebhookView(View):
    """Verify, refuse replays, parse through the provider's adapter, react."""

    http_method_names = ["post"]

    def post(self, request, provider: str, kind: str):
        if not providers.in_use(provider) or kind not in registry.provider_class(provider).webhook_kinds:
            raise Http404(f"no {kind} webhook for provider {provider}")
        # A call about a message sent with an app's own settings names the app (webhook_url):
        # that app's credentials verify it.
        adapter = providers.adapter_of_app(provider, request.GET.get("app"))
        # Providers sign the public URL they called, which a proxy may rewrite: rebuild it from
        # the configured public base.
        url = settings.NOTIFY_PUBLIC_URL.rstrip("/") + request.get_full_path()
        params = request.POST.dict()
        headers = dict(request.headers)
        if not adapter.verify_webhook(url, params, headers):
            return JsonResponse(error_body("invalid_signature", "webhook signature does not verify"), status=403)
        redis = get_redis_connection("default")
        seen = _seen_key(provider, kind, url, params)
        if not redis.set(seen, 1, nx=True, ex=REPLAY_WINDOW):
            return JsonResponse(error_body("replayed", "this webhook call was already handled"), status=409)
        try:
            for event in adapter.parse_webhook(kind, params, request.GET.dict()):
                react(adapter.name, provider, event, _app_id(request.GET.get("app")))
        except Exception:
            redis.delete(seen)  # not handled: the provider's retry must get through
            raise
        return HttpResponse(status=204)


def _uuid(value: str | None) -> bool:
    """True for a delivery id we could have given (a signed call may still carry anything)."""
    try:
        uuid.UUID(value or "")
    except ValueError:
        return False
    return True


def _app_id(value: str | None) -> int | None:
    """The app a call names (``?app=<id>``, as notify.providers.adapter_of_app reads it)."""
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def react(channel: str, provider: str, event: WebhookEvent, app_id: int | None = None) -> None:
    """What the service does with one webhook event of ``provider`` (a provider of ``channel``):
    a status the adapter maps to a delivery event is recorded through notify.receipts (once per
    delivery and kind, the status only moving forward; a refusal such as Twilio's 21610 opts the
    recipient out); SMS STOP/START keywords set the preference of every recipient at the number.

    A call naming an app (``app_id``) was verified with that app's own credentials, which the app
    holds too: it acts on that app's deliveries and recipients only, so an app cannot sign a call
    about another app's delivery id or recipient's number."""
    if event.kind == "status" and event.receipt and _uuid(event.delivery_id) and event.provider_message_id:
        if app_id is not None and not Delivery.objects.filter(id=event.delivery_id,
                                                              notification__app_id=app_id).exists():
            return
        receipts.record(event.delivery_id, event.receipt, event.occurred_at, source=provider,
                        provider_message_id=event.provider_message_id, reason=event.reason or "",
                        data=event.raw, refused=event.refused)
    elif event.kind in ("opt_out", "opt_in") and event.address:
        recipients = store.recipients_at(event.address)
        if app_id is not None:
            recipients = list(Recipient.objects.filter(id__in=recipients, app_id=app_id).values_list("id", flat=True))
        store.set_preferences(recipients, [channel], "", event.kind == "opt_in", f"{provider}_keyword")

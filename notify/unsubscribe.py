"""One-click unsubscribe for email (RFC 8058), required by Gmail and Yahoo for bulk senders.

Each email carries ``List-Unsubscribe: <https://…/unsubscribe/<token>>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; the mailbox provider POSTs
``List-Unsubscribe=One-Click`` to that URL and the recipient is opted out of the delivery's
channel for the notification's category at once. The token is the delivery id signed with the secret key, so it
cannot be guessed or forged. The delivery gets an ``unsubscribed`` event (notify.receipts, once),
so unsubscribes can be counted per template and category like opens and clicks.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import translation
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .api.errors import error_body
from . import preferences, privacy, receipts, store
from .models import Delivery

_SALT = "notify.unsubscribe"


def unsubscribe_url(delivery_id: str) -> str | None:
    """The one-click URL of a delivery, or None when the public URL is not https (RFC 8058
    requires https, and providers ignore anything else)."""
    base = settings.NOTIFY_PUBLIC_URL.rstrip("/")
    if not base.startswith("https://"):
        return None
    return f"{base}/unsubscribe/{signing.dumps(str(delivery_id), salt=_SALT, compress=True)}"


@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    """GET shows a confirmation page (link scanners must not unsubscribe anyone); POST opts out
    and shows that it did. Both pages speak the recipient's language (notify.preferences'
    catalogs) and link the preference page.

    Refused: a token that does not verify → 400; a delivery that is gone, or whose recipient
    was erased → 404. A GET gets those as pages; a POST, which mailbox providers make, as JSON
    error bodies.
    """
    try:
        delivery_id = signing.loads(token, salt=_SALT)
    except signing.BadSignature:
        if request.method == "GET":
            return preferences.refuse(request, 400, *preferences.INVALID_LINK, None)
        return JsonResponse(error_body("invalid_token", "unknown unsubscribe link"), status=400)
    delivery = Delivery.objects.select_related("notification__recipient__app").filter(id=delivery_id).first()
    if delivery is None or privacy.is_erased(delivery.notification.recipient.external_id):
        if request.method == "GET":
            return preferences.refuse(request, 404, *preferences.GONE, None)
        return JsonResponse(error_body("not_found", "unknown delivery"), status=404)
    notification = delivery.notification
    if request.method == "POST":
        # The link came in one delivery: the recipient leaves that channel for that category.
        with transaction.atomic():
            store.set_preferences([notification.recipient_id], [delivery.channel], notification.category, False,
                                  "unsubscribe")
            receipts.record(delivery.id, "unsubscribed", source="unsubscribe")
    recipient = notification.recipient
    lang = preferences.language(recipient.locale)
    with translation.override(lang):
        response = render(request, "notify/unsubscribe.html", {
            "lang": lang, "app": recipient.app.name, "done": request.method == "POST",
            "preferences_url": preferences.link(recipient.app_id, recipient.id)[0],
            "preferences_label": preferences.label(lang)})
    return preferences.private(response)

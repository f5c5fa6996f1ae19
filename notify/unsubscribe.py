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
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .api.errors import error_body
from . import receipts, store
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
    """GET shows a confirmation form (link scanners must not unsubscribe anyone); POST opts out."""
    try:
        delivery_id = signing.loads(token, salt=_SALT)
    except signing.BadSignature:
        return JsonResponse(error_body("invalid_token", "unknown unsubscribe link"), status=400)
    if request.method == "GET":
        return HttpResponse('<form method="post"><button name="List-Unsubscribe" value="One-Click">'
                            "Unsubscribe</button></form>")
    delivery = Delivery.objects.select_related("notification").filter(id=delivery_id).first()
    if delivery is None:
        return JsonResponse(error_body("not_found", "unknown delivery"), status=404)
    # The link came in one delivery: the recipient leaves that channel for that category.
    with transaction.atomic():
        store.set_preferences([delivery.notification.recipient_id], [delivery.channel],
                              delivery.notification.category, False, "unsubscribe")
        receipts.record(delivery.id, "unsubscribed", source="unsubscribe")
    return HttpResponse("You are unsubscribed.")

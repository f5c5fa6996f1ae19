"""The public ends of the tracking links (notify.tracking): the open pixel, the click redirect and
the push open URL. None needs an API key; each answers only a token signed by this service, and
a forged or altered one is a 400 with nothing recorded.

What counts. Each event is recorded through notify.receipts, once per delivery and kind (a
second open or click is answered as the first, and not counted again). A click also records an
open (the mail was read even if its images were blocked). Not counted, though still answered:

- ``HEAD`` requests (link checkers probe with them; a person's browser does not);
- a ``GET`` within ``NOTIFY_TRACKING_SCANNER_WINDOW`` seconds of the send whose
  ``User-Agent`` is empty or names a scanner, crawler or HTTP library
  (:data:`SCANNER_AGENTS`): mail security gateways (Microsoft Safe Links, Proofpoint,
  Mimecast, Barracuda) follow every link as the mail arrives. Scanners dressed as browsers are
  not told apart, and Apple Mail Privacy Protection loads every pixel: opens are an upper
  bound, clicks the better signal.
"""

from __future__ import annotations

import re
import time

from django.conf import settings
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from . import receipts, tracking
from .api.errors import error_body

#: A transparent 1x1 GIF89a (42 bytes).
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
         b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x01D\x00;")
#: User-Agent fragments of link scanners, crawlers, link previews and HTTP libraries.
SCANNER_AGENTS = re.compile(
    r"bot|crawl|spider|scan|preview|safelinks|urldefense|proofpoint|mimecast|barracuda|python-|curl/|wget/"
    r"|go-http-client|okhttp|java/|libwww|httpclient", re.IGNORECASE)
#: Every answer is the recipient's own: never cached (each open reaches us), never indexed.
_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0", "Pragma": "no-cache",
             "Expires": "0", "X-Robots-Tag": "noindex, nofollow"}


def counts(request, sent_at: float) -> bool:
    """Whether a request for a tracking link is a person's, by the rule in the module docstring.

    Args:
        request: the Django request (its method and ``User-Agent``).
        sent_at: Unix seconds the delivery was sent (from the token).
    """
    if request.method == "HEAD":
        return False
    if time.time() - sent_at >= settings.NOTIFY_TRACKING_SCANNER_WINDOW:
        return True
    agent = request.META.get("HTTP_USER_AGENT", "").strip()
    return bool(agent) and not SCANNER_AGENTS.search(agent)


def _refused(headers: dict | None = None) -> JsonResponse:
    return JsonResponse(error_body("invalid_token", "unknown tracking link"), status=400,
                        headers={**_NO_CACHE, **(headers or {})})


@require_http_methods(["GET", "HEAD"])
def open_pixel(request, token: str):
    """``GET /t/o/<token>.gif``: records ``opened`` and answers the 1x1 GIF, uncached."""
    tracked = tracking.read_open(token)
    if tracked is None:
        return _refused()
    if counts(request, tracked.sent_at):
        receipts.record(tracked.delivery_id, "opened", source="tracking", data={"via": "pixel"})
    return HttpResponse(PIXEL, content_type="image/gif", headers=_NO_CACHE)


@require_http_methods(["GET", "HEAD"])
def click(request, token: str):
    """``GET /t/c/<token>``: records ``opened`` and ``clicked``, and answers a 302 to exactly the
    link's signed target (``Referrer-Policy: no-referrer``: the target does not learn the
    tracking URL)."""
    tracked = tracking.read_click(token)
    if tracked is None:
        return _refused()
    if counts(request, tracked.sent_at) and receipts.record(
            tracked.delivery_id, "opened", source="tracking", data={"via": "click"}) is not None:
        receipts.record(tracked.delivery_id, "clicked", source="tracking", data={"url": tracked.target})
    response = HttpResponseRedirect(tracked.target, headers=_NO_CACHE)
    response["Referrer-Policy"] = "no-referrer"
    return response


#: A service worker on the app's origin posts here: a simple cross-origin request (no preflight),
#: whose answer it may read.
_CORS = {"Access-Control-Allow-Origin": "*"}


@csrf_exempt
@require_http_methods(["POST"])
def push_open(request, token: str):
    """``POST /t/p/<token>`` (no body, no API key): records ``opened`` for a push delivery.

    Answers 200 ``{"recorded": bool}`` (false: already recorded), 400 ``invalid_token``, 404
    ``not_found`` (the delivery no longer exists).
    """
    delivery_id = tracking.read_push_open(token)
    if delivery_id is None:
        return _refused(_CORS)
    outcome = receipts.record(delivery_id, "opened", source="tracking", data={"via": "open_url"})
    if outcome is None:
        return JsonResponse(error_body("not_found", "unknown delivery"), status=404, headers=_CORS)
    return JsonResponse({"recorded": outcome.recorded}, headers=_CORS)

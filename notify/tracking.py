"""Signed tracking links: an email's open pixel and click redirects, and a push message's open URL.

Every link is ``NOTIFY_PUBLIC_URL`` plus a token signed with the secret key (Django's
:mod:`django.core.signing`, HMAC-SHA256, a salt per kind of link, so a token of one kind is
refused as another):

- ``/t/o/<token>.gif``: the open pixel; the token carries the delivery id and the send time.
- ``/t/c/<token>``: a click; the token carries the delivery id, the send time and the link's
  original target, so the redirect can only ever lead there (no open redirect), and a changed
  target or delivery id breaks the signature.
- ``/t/p/<token>``: a push message's open, POSTed by a Web Push service worker without an API key.

Tokens never expire: a link in a mail read a year later must still lead to its target. They are
made per delivery at send time (notify.send.message_for), CPU only; the views are in
notify.tracking_views.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing

from .html_links import rewrite, web_link

_OPEN_SALT = "notify.tracking.open"
_CLICK_SALT = "notify.tracking.click"
_PUSH_OPEN_SALT = "notify.tracking.push-open"


@dataclass(frozen=True)
class Tracked:
    """What a valid open or click token says.

    Attributes:
        delivery_id: the delivery's UUID (canonical string form).
        sent_at: Unix time (seconds) the link was made, i.e. when the delivery was sent.
        target: a click's original http(s) URL; None for an open.
    """

    delivery_id: str
    sent_at: float
    target: str | None = None


def _base() -> str:
    return settings.NOTIFY_PUBLIC_URL.rstrip("/")


def _sign(salt: str, value: dict[str, Any]) -> str:
    return signing.Signer(salt=salt).sign_object(value, compress=True)


def _unsign(salt: str, token: str) -> dict | None:
    try:
        value = signing.Signer(salt=salt).unsign_object(token)
    except (signing.BadSignature, ValueError):  # ValueError: a signed value that does not decode
        return None
    return value if isinstance(value, dict) else None


def _delivery(value: Any) -> str | None:
    try:
        return str(uuid.UUID(hex=value))
    except (TypeError, ValueError, AttributeError):
        return None


def open_url(delivery_id: Any, sent_at: float | None = None) -> str:
    """The open pixel's URL for a delivery (``sent_at``: Unix seconds, default now)."""
    token = _sign(_OPEN_SALT, {"d": uuid.UUID(str(delivery_id)).hex, "t": int(sent_at or time.time())})
    return f"{_base()}/t/o/{token}.gif"


def click_url(delivery_id: Any, target: str, sent_at: float | None = None) -> str:
    """The redirect URL standing in for the link to ``target`` (an absolute http(s) URL) in a
    delivery's email (``sent_at``: Unix seconds, default now)."""
    token = _sign(_CLICK_SALT, {"d": uuid.UUID(str(delivery_id)).hex, "t": int(sent_at or time.time()),
                                "u": target})
    return f"{_base()}/t/c/{token}"


def push_open_url(delivery_id: Any) -> str:
    """The URL a push message's receiver POSTs to (no body, no API key) when it is opened."""
    token = signing.Signer(salt=_PUSH_OPEN_SALT).sign(uuid.UUID(str(delivery_id)).hex)
    return f"{_base()}/t/p/{token}"


def read_open(token: str) -> Tracked | None:
    """The delivery and send time of an open pixel token; None if forged or altered."""
    value = _unsign(_OPEN_SALT, token)
    delivery_id = _delivery(value.get("d")) if value else None
    if delivery_id is None or not isinstance(value.get("t"), int):
        return None
    return Tracked(delivery_id, float(value["t"]))


def read_click(token: str) -> Tracked | None:
    """The delivery, send time and target of a click token; None if forged or altered (or, as
    a second line of defence, if its target is not an http(s) URL)."""
    value = _unsign(_CLICK_SALT, token)
    delivery_id = _delivery(value.get("d")) if value else None
    if delivery_id is None or not isinstance(value.get("t"), int) or not isinstance(value.get("u"), str) \
            or web_link(value["u"]) != value["u"]:
        return None
    return Tracked(delivery_id, float(value["t"]), value["u"])


def read_push_open(token: str) -> str | None:
    """The delivery id of a push open token; None if forged or altered."""
    try:
        return _delivery(signing.Signer(salt=_PUSH_OPEN_SALT).unsign(token))
    except signing.BadSignature:
        return None


def switches(track_opens: bool, track_clicks: bool, category_rules: dict | None) -> tuple[bool, bool]:
    """``(opens, clicks)``: whether a delivery's email gets the pixel and the click redirects:
    the app's ``track_opens`` / ``track_clicks``, both off when its category has ``tracking``
    off (``category_rules``: the claim's row of the category, None when the app has not
    defined it)."""
    if category_rules and category_rules.get("tracking") is False:
        return False, False
    return bool(track_opens), bool(track_clicks)


def email_html(html: str, delivery_id: Any, *, opens: bool, clicks: bool, sent_at: float | None = None) -> str:
    """An email's HTML part as sent: with ``clicks``, each ``<a href>`` to an http(s) URL
    replaced by its :func:`click_url` (except links to this service itself, such as the
    preference page); with ``opens``, the :func:`open_url` pixel added before ``</body>``.
    See notify.html_links.rewrite."""
    if not (opens or clicks):
        return html
    sent_at = sent_at or time.time()
    own = _base() + "/"

    def link(target: str) -> str | None:
        return None if (target + "/").startswith(own) else click_url(delivery_id, target, sent_at)

    return rewrite(html, link if clicks else None, open_url(delivery_id, sent_at) if opens else None)

"""The hosted preference page: a signed link per recipient opens a page, without an account,
where the recipient switches channels and categories on and off and pauses everything.

The link is ``NOTIFY_PUBLIC_URL/preferences/<token>``; the token carries the app and recipient
ids signed with the secret key (Django's ``signing``, a salt of its own, a timestamp), so it
cannot be guessed, forged or changed, and it is refused after ``NOTIFY_PREFERENCE_LINK_MAX_AGE``
seconds. Every email of a category recipients may leave carries one (notify.send.message_for),
and ``GET /api/v1/recipients/<id>/preference-link`` gives one to apps.

What the page writes goes through the same writers as the API: notify.store.set_preferences
(source ``page``) and the recipient's ``muted``/``muted_until`` through ``Recipient.save`` (both
clear the cached profile), and the worker's claim reads them, so a delivery already queued is
suppressed too. The page's strings are translated with Django's i18n (``notify/locale``); the
language is the recipient's locale, by its language subtag, else English.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone, translation
from django.utils.translation import gettext, gettext_noop
from django.views.decorators.http import require_http_methods

from channels import registry

from . import cache, policy, privacy, store
from .models import Category, Recipient
from .rendering import select_locale

_SALT = "notify.preferences"
#: The page's languages: English (the msgids) and every catalog under notify/locale.
LANGUAGES = ("en", *sorted(p.name for p in (Path(__file__).parent / "locale").iterdir() if p.is_dir()))
#: "Pause everything" choices: form value → how long (None: until switched back on).
PAUSES = {"1d": dt.timedelta(days=1), "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30), "on": None}
#: Where the whole page is the recipient's private view: not cached, not indexed, and the token
#: in its URL not sent to another site (``same-origin``, not ``no-referrer``: with that, browsers
#: send ``Origin: null`` on the form's own POST and Django's CSRF check refuses it).
_PRIVATE_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow", "Referrer-Policy": "same-origin"}


def make_token(app_id: int, recipient_id: int) -> str:
    """A signed, timestamped token naming one recipient of one app (URL-safe)."""
    return signing.dumps({"a": app_id, "r": recipient_id}, salt=_SALT, compress=True)


def link(app_id: int, recipient_id: int) -> tuple[str, dt.datetime]:
    """``(url, expires_at)`` of a recipient's preference page: valid for
    ``NOTIFY_PREFERENCE_LINK_MAX_AGE`` seconds from now."""
    url = f"{settings.NOTIFY_PUBLIC_URL.rstrip('/')}/preferences/{make_token(app_id, recipient_id)}"
    return url, timezone.now() + dt.timedelta(seconds=settings.NOTIFY_PREFERENCE_LINK_MAX_AGE)


#: The email footer's link to the page (channels.email adds it), in English; translated per
#: recipient by :func:`label`.
LINK_LABEL = gettext_noop("Manage your notification preferences")


def label(locale: str | None) -> str:
    """The text of the link to the page in an email's footer, in ``locale``'s language as the
    page speaks it (:func:`language`; English for a language the page does not have)."""
    return _label(language(locale))


@functools.lru_cache(maxsize=None)  # one entry per language of LANGUAGES: the worker's send asks
def _label(lang: str) -> str:
    with translation.override(lang):
        return gettext(LINK_LABEL)


def language(locale: str | None) -> str:
    """The page's language for a BCP 47 locale: its own or its language's (``ko-KR`` → ``ko``),
    else English."""
    return select_locale(LANGUAGES, locale, "en")


#: The refusals' texts (title, detail), for this page and the unsubscribe page.
INVALID_LINK = (gettext_noop("This link is not valid."),
                gettext_noop("Open the link exactly as it is in one of our messages."))
EXPIRED_LINK = (gettext_noop("This link has expired."),
                gettext_noop("Open the link in a newer message from us, or ask us for a new one."))
GONE = (gettext_noop("This page is no longer available."), gettext_noop("We have nothing stored about you any more."))


def private(response: HttpResponse) -> HttpResponse:
    """``response`` with the headers of a page for one recipient: never cached, never indexed,
    no referrer to elsewhere."""
    for name, value in _PRIVATE_HEADERS.items():
        response[name] = value
    return response


def refuse(request, status: int, title: str, detail: str, locale: str | None) -> HttpResponse:
    """A refusal page (``status``) in ``locale``'s language, else the browser's
    (Accept-Language); ``title`` and ``detail`` are msgids (:data:`INVALID_LINK`, ...)."""
    lang = language(locale or translation.get_language_from_request(request))
    with translation.override(lang):
        response = render(request, "notify/preferences_refused.html",
                          {"lang": lang, "title": gettext(title), "detail": gettext(detail)}, status=status)
    return private(response)


def _reachable(profile: dict) -> list[str]:
    """The enabled channels the recipient has an address on (a device, phone or email)."""
    from .accept import addresses  # the accept path's own rule of where a channel finds its address

    return [channel for channel in registry.channels() if addresses(channel, profile)]


def _state(profile: dict, categories: list[Category], channels: list[str]) -> dict[str, bool]:
    """What the page shows: ``{"ch:<channel>": bool}`` (the channel-wide choice, on unless
    opted out) and ``{"c:<category>:<channel>": bool}`` (whether that category goes out on that
    channel now, by notify.policy)."""
    prefs = profile["preferences"]
    state = {f"ch:{channel}": prefs.get(f"{channel}|", True) for channel in channels}
    for category in categories:
        rules_ = policy.rules({"required": category.required, "defaults": category.defaults}, category.name)
        for channel in channels:
            state[f"c:{category.name}:{channel}"] = policy.opted_in(
                policy.preference_of(prefs, channel, category.name), rules_, channel)
    return state


@require_http_methods(["GET", "POST"])
def page(request, token: str):
    """``GET /preferences/<token>`` shows the recipient's choices; ``POST`` (Django's CSRF
    protection, the cookie set by the GET) saves them and redirects back with ``?saved=1``.

    Refused: a token that does not verify (tampered, truncated, another salt) → 400; an expired
    one → 410 (in the recipient's language); a recipient deleted or erased since → 404 (an
    erased recipient's row stays, muted, as a tombstone: a link issued before must neither show
    it nor unmute it).
    """
    try:
        claims = signing.loads(token, salt=_SALT, max_age=settings.NOTIFY_PREFERENCE_LINK_MAX_AGE)
    except signing.SignatureExpired:
        # Genuine but old: the recipient it names decides the language of the answer.
        claims = signing.loads(token, salt=_SALT)
        locale = Recipient.objects.filter(pk=claims.get("r"), app_id=claims.get("a")).values_list(
            "locale", flat=True).first()
        return refuse(request, 410, *EXPIRED_LINK, locale)
    except signing.BadSignature:
        return refuse(request, 400, *INVALID_LINK, None)
    recipient = Recipient.objects.select_related("app").filter(pk=claims["r"], app_id=claims["a"]).first()
    if recipient is None or privacy.is_erased(recipient.external_id):
        return refuse(request, 404, *GONE, None)
    profile = cache.load_profile(recipient.app_id, recipient.external_id)
    categories = list(Category.objects.filter(app_id=recipient.app_id).order_by("-required", "name"))
    channels = _reachable(profile)
    state = _state(profile, categories, channels)
    lang = language(recipient.locale)

    if request.method == "POST":
        _save(recipient, profile, categories, channels, state, request.POST)
        return HttpResponseRedirect(f"{request.path}?saved=1")

    now = timezone.now()
    with translation.override(lang):
        labels = {channel: gettext(registry.channel_class(channel).label) for channel in channels}
        context = {
            "lang": lang, "app": recipient.app.name, "saved": request.GET.get("saved") == "1",
            "channels": [{"name": c, "label": labels[c], "on": state[f"ch:{c}"]} for c in channels],
            "categories": [{
                "name": category.name, "label": category.label or category.name, "description": category.description,
                "required": category.required,
                "channels": [{"name": c, "label": labels[c], "on": state[f"c:{category.name}:{c}"]}
                             for c in channels]} for category in categories],
            "muted": policy.is_muted(recipient.muted, recipient.muted_until, now),
            "muted_until": recipient.muted_until.astimezone(policy.zone(recipient.timezone))
            if recipient.muted_until and recipient.muted_until > now else None,
        }
        response = render(request, "notify/preferences.html", context)
    return private(response)


def _save(recipient: Recipient, profile: dict, categories: list[Category], channels: list[str],
          state: dict[str, bool], posted) -> None:
    """Write what changed, so the result is what the page showed when it was posted: a channel
    switched off switches off each category on it, and a category row is written only where the
    outcome (notify.policy: the category's own row over the channel-wide one, then the
    category's default) would differ from the checkbox. Checkboxes post only when checked, so a
    field's absence means off."""
    prefs = profile["preferences"]
    with transaction.atomic():
        for channel in channels:
            wanted = f"ch:{channel}" in posted
            if wanted != state[f"ch:{channel}"]:
                store.set_preferences([recipient.id], [channel], "", wanted, "page")
            channel_row = wanted if f"{channel}|" in prefs or wanted != state[f"ch:{channel}"] else None
            for category in categories:
                if category.required:
                    continue
                on = wanted and f"c:{category.name}:{channel}" in posted
                own = prefs.get(f"{channel}|{category.name}")
                rules_ = policy.rules({"defaults": category.defaults}, category.name)
                if on != policy.opted_in(own if own is not None else channel_row, rules_, channel):
                    store.set_preferences([recipient.id], [channel], category.name, on, "page")
        muted_now = policy.is_muted(recipient.muted, recipient.muted_until, timezone.now())
        if "muted" in posted:
            pause = posted.get("pause", "")
            # "keep" (offered while paused) leaves a running pause as it is.
            if pause in PAUSES or not muted_now:
                length = PAUSES.get(pause)
                recipient.muted = True
                recipient.muted_until = timezone.now() + length if length else None
                recipient.save(update_fields=["muted", "muted_until", "updated_at"])
        elif recipient.muted:
            recipient.muted, recipient.muted_until = False, None
            recipient.save(update_fields=["muted", "muted_until", "updated_at"])

"""Cutting a push body to fit a provider's payload limit, on grapheme-cluster boundaries.

A user-perceived character (a grapheme cluster: a Korean syllable, an emoji with its skin-tone
modifier, a flag, a letter with combining marks) is never split, so the cut text is valid UTF-8
and shows no broken glyph. Clusters come from the ``regex`` module's ``\\X`` (Unicode UAX #29).
"""

from __future__ import annotations

from typing import Any, Callable

import regex

from channels.errors import InvalidMessage

#: Appended to a cut body so the reader sees it was cut.
ELLIPSIS = "…"
_CLUSTER = regex.compile(r"\X")


def fit_body(part: dict[str, Any], fits: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The longest cut of ``part["body"]`` (whole grapheme clusters, then an ellipsis) for which
    ``fits(part)`` holds, as a new part; None when even an empty body does not fit or there is
    no body. ``fits`` is asked O(log n) times (a binary search over the clusters)."""
    body = part.get("body")
    if not isinstance(body, str) or not body:
        return None
    clusters = _CLUSTER.findall(body)

    def cut(count: int) -> dict[str, Any]:
        return {**part, "body": "".join(clusters[:count]).rstrip() + ELLIPSIS}

    low, high = 0, len(clusters) - 1  # the full body did not fit
    if not fits(cut(low)):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if fits(cut(middle)):
            low = middle
        else:
            high = middle - 1
    return cut(low)


def fit_for(cls, part: dict[str, Any], config: dict[str, Any]) -> dict[str, Any] | None:
    """``part`` with its body cut until the adapter class ``cls`` accepts it
    (``check_content``), or None when no cut does (see :func:`fit_body`)."""
    def accepts(candidate: dict[str, Any]) -> bool:
        try:
            cls.check_content(candidate, config)
        except InvalidMessage:
            return False
        return True

    return fit_body(part, accepts)


def checked(cls, part: dict[str, Any], config: dict[str, Any], truncate: bool) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Ask the adapter class ``cls`` about ``part``: ``(part as it will be sent, what the adapter
    reports about it, whether the body was cut)``. With ``truncate`` (a template's
    ``truncate_push``) a body too large for the provider is cut until it fits.

    Raises:
        InvalidMessage: the provider would refuse ``part`` (and no cut helps).
    """
    try:
        return part, cls.check_content(part, config) or {}, False
    except InvalidMessage as exc:
        fitted = fit_for(cls, part, config) if truncate and exc.reason == "payload_too_large" else None
        if fitted is None:
            raise
        return fitted, cls.check_content(fitted, config) or {}, True

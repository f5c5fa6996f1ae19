"""SMS segment counting (what the carrier bills), for cost reports in the API.

Rules (3GPP TS 23.038 / 23.040, as Twilio documents them in "What the heck is a segment?"):

* GSM-7: a message of at most 160 septets is one segment; longer messages are split into
  segments of 153 septets (7 septets go to the concatenation header). Characters of the GSM
  extension table (``^ { } \\ [ ~ ] | €`` and form feed) take two septets (escape + char) and
  an escape pair is never split across segments.
* Any character outside GSM-7 (Korean, most emoji, curly quotes...) switches the whole message
  to UCS-2: 70 UTF-16 code units in one segment, else 67 per segment; characters outside the
  BMP (most emoji) are two code units (a surrogate pair) that are never split.

:func:`segments` is what the product uses; :func:`sms_info` adds the size in units and
characters (the sandbox's Twilio emulator reports it). Standard library only.
"""

from __future__ import annotations

from typing import TypedDict

GSM7 = "GSM-7"
UCS2 = "UCS-2"

#: GSM 03.38 basic character set (without the escape code 0x1B).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38 extension table: each costs an escape septet plus itself.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

_LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


class SmsInfo(TypedDict):
    """What :func:`sms_info` returns."""

    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    characters: int


def encoding_of(body: str) -> str:
    """``"GSM-7"`` if every character is in the GSM-7 basic/extension tables, else ``"UCS-2"``."""
    return GSM7 if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body) else UCS2


def _units(body: str, encoding: str) -> list[int]:
    """Per-character cost: septets (GSM-7) or UTF-16 code units (UCS-2)."""
    if encoding == GSM7:
        return [2 if c in GSM7_EXTENSION else 1 for c in body]
    return [2 if ord(c) > 0xFFFF else 1 for c in body]


def _count(units: list[int], encoding: str) -> int:
    """Billed segments for per-character costs ``units``; 0 when there is no text."""
    if not units:
        return 0
    single, multi = _LIMITS[encoding]
    if sum(units) <= single:
        return 1
    count, used = 1, 0
    for cost in units:  # fill each segment; a 2-unit character never straddles two segments
        if used + cost > multi:
            count, used = count + 1, 0
        used += cost
    return count


def sms_info(body: str) -> SmsInfo:
    """Encoding, segments and size of an SMS body.

    Args:
        body: the message text (Python str; characters, not bytes).

    Returns:
        ``{"encoding": "GSM-7" | "UCS-2", "segments": int, "units": int, "characters": int}``:
        ``units`` are septets (GSM-7) or UTF-16 code units (UCS-2), ``characters`` the number of
        code points of ``body``. An empty body is ``GSM-7`` with 0 segments, units and
        characters.

    Examples:
        >>> sms_info("😀" * 36)
        {'encoding': 'UCS-2', 'segments': 2, 'units': 72, 'characters': 36}
    """
    encoding = encoding_of(body)
    units = _units(body, encoding)
    return SmsInfo(encoding=encoding, segments=_count(units, encoding), units=sum(units),
                   characters=len(body))


def segments(body: str) -> tuple[int, str]:
    """Return ``(segment_count, encoding)`` for an SMS body (see :func:`sms_info`).

    Args:
        body: the message text (Python str; characters, not bytes).

    Returns:
        ``(0, "GSM-7")`` for an empty body; otherwise the number of billed segments and
        ``"GSM-7"`` or ``"UCS-2"``.

    Examples:
        >>> segments("a" * 160), segments("a" * 161), segments("안녕" * 35)
        ((1, 'GSM-7'), (2, 'GSM-7'), (1, 'UCS-2'))
    """
    info = sms_info(body)
    return info["segments"], info["encoding"]

"""SMS segment counting (what the carrier bills), for cost reports in the API.

Rules (3GPP TS 23.038 / 23.040, as Twilio documents them in "What the heck is a segment?"):

* GSM-7: a message of at most 160 septets is one segment; longer messages are split into
  segments of 153 septets (7 septets go to the concatenation header). Characters of the GSM
  extension table (``^ { } \\ [ ~ ] | €`` and form feed) take two septets (escape + char) and
  an escape pair is never split across segments.
* Any character outside GSM-7 (Korean, most emoji, curly quotes...) switches the whole message
  to UCS-2: 70 UTF-16 code units in one segment, else 67 per segment; characters outside the
  BMP (most emoji) are two code units (a surrogate pair) that are never split.
"""

from __future__ import annotations

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


def encoding_of(body: str) -> str:
    """``"GSM-7"`` if every character is in the GSM-7 basic/extension tables, else ``"UCS-2"``."""
    return GSM7 if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body) else UCS2


def _units(body: str, encoding: str) -> list[int]:
    """Per-character cost: septets (GSM-7) or UTF-16 code units (UCS-2)."""
    if encoding == GSM7:
        return [2 if c in GSM7_EXTENSION else 1 for c in body]
    return [2 if ord(c) > 0xFFFF else 1 for c in body]


def segments(body: str) -> tuple[int, str]:
    """Return ``(segment_count, encoding)`` for an SMS body.

    Args:
        body: the message text (Python str; characters, not bytes).

    Returns:
        ``(0, "GSM-7")`` for an empty body; otherwise the number of billed segments and
        ``"GSM-7"`` or ``"UCS-2"``.

    Examples:
        >>> segments("a" * 160), segments("a" * 161), segments("안녕" * 35)
        ((1, 'GSM-7'), (2, 'GSM-7'), (1, 'UCS-2'))
    """
    if not body:
        return 0, GSM7
    encoding = encoding_of(body)
    units = _units(body, encoding)
    single, multi = _LIMITS[encoding]
    if sum(units) <= single:
        return 1, encoding
    count, used = 1, 0
    for cost in units:  # fill each segment; a 2-unit character never straddles two segments
        if used + cost > multi:
            count, used = count + 1, 0
        used += cost
    return count, encoding

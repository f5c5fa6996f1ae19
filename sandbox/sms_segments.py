"""SMS encoding and segment count, as carriers and Twilio bill them.

GSM 03.38 / 3GPP TS 23.038: text made only of the GSM-7 default alphabet (plus the extension
table, whose characters take two septets: ESC + char) is sent as GSM-7: 160 septets in one
segment, 153 per segment once split (the UDH takes 7). Any other character switches the whole
message to UCS-2 (UTF-16): 70 code units in one segment, 67 per segment once split. Characters
outside the BMP (most emoji) are two UTF-16 units. A segment never splits an escape pair or a
surrogate pair. (Twilio: "What the heck is a segment?", twilio.com/docs/glossary/what-sms-character-limit.)
"""

from __future__ import annotations

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def _pack(units: list[int], single: int, multi: int) -> int:
    total = sum(units)
    if total <= single:
        return 1 if total else 1
    segments, used = 1, 0
    for u in units:
        if used + u > multi:
            segments += 1
            used = 0
        used += u
    return segments


def sms_info(body: str) -> dict:
    """Encoding and segments of ``body``.

    Returns:
        ``{"encoding": "GSM-7" | "UCS-2", "segments": int, "units": int, "characters": int}``
        where ``units`` are septets (GSM-7) or UTF-16 code units (UCS-2).
    """
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body):
        units = [2 if c in GSM7_EXTENSION else 1 for c in body]
        return {"encoding": "GSM-7", "segments": _pack(units, 160, 153), "units": sum(units),
                "characters": len(body)}
    units = [2 if ord(c) > 0xFFFF else 1 for c in body]
    return {"encoding": "UCS-2", "segments": _pack(units, 70, 67), "units": sum(units),
            "characters": len(body)}

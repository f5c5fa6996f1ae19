"""What a user's device, phone or mailbox shows: accepted messages after collapse rules.

- APNs: a later notification with the same ``apns-collapse-id`` for the same device token
  replaces the earlier one (Apple, "Sending notification requests to APNs").
- FCM: same ``android.collapse_key`` (or ``apns.headers.apns-collapse-id``) for the same token
  (firebase.google.com/docs/cloud-messaging/customize-messages/collapsible-message-types).
- Web Push: same ``Topic`` for the same subscription (RFC 8030 §5.4).
- SMS and email: every accepted message.

Not shown: rejected requests, FCM ``validate_only`` requests, Web Push bodies that do not decrypt,
Twilio messages whose status ends ``undelivered``/``failed`` (fault ``callback_status``).
"""

from __future__ import annotations

from typing import Iterable

COLLAPSING = ("apns", "fcm", "webpush")


def build_inbox(records: Iterable[dict], provider: str | None = None,
                to: str | None = None) -> list[dict]:
    """Messages shown, oldest first.

    Each item is the record of the message shown plus ``"replaced": [seq, ...]``, the seqs of
    earlier messages it replaced through collapsing.
    """
    shown: dict[tuple, dict] = {}
    replaced: dict[tuple, list[int]] = {}
    for r in records:
        if not r.get("accepted"):
            continue
        if provider is not None and r["provider"] != provider:
            continue
        if to is not None and r.get("to") != to:
            continue
        extra = r.get("extra") or {}
        if extra.get("decrypt_error") or extra.get("final_status") in ("undelivered", "failed"):
            continue
        collapse = extra.get("collapse_id") if r["provider"] in COLLAPSING else None
        key = (r["provider"], r.get("to"), collapse) if collapse else ("seq", r["seq"])
        if key in shown:
            replaced.setdefault(key, []).append(shown[key]["seq"])
        shown[key] = r
    out = []
    for key, r in shown.items():
        item = dict(r)
        item["replaced"] = sorted(replaced.get(key, []))
        out.append(item)
    out.sort(key=lambda x: x["seq"])
    return out

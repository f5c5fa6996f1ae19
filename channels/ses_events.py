"""Amazon SES event records, as SNS delivers them, in the service's terms.

Provider documentation (SES Developer Guide): "Contents of event data that Amazon SES publishes
to Amazon SNS" (event publishing through a configuration set: ``eventType`` and a ``mail``
object carrying the message ``tags``) and "Amazon SES notification contents for Amazon SNS"
(the older identity notifications: ``notificationType`` Bounce, Complaint or Delivery, no tags);
"Bounce types" for ``bounceType`` / ``bounceSubType``. Both SES adapters read them: mail sent
through SES's SMTP interface is published the same way as mail sent through the API.

The delivery is found by the message tag ``delivery_id`` (SES API ``EmailTags``; SMTP header
``X-SES-MESSAGE-TAGS: delivery_id=<id>``), else by the ``X-Notify-Delivery-Id`` header among
``mail.headers`` (the older format has no tags; SES includes the headers when the identity's
"include original headers" is on).

========================  ==========================  ====================================
record                    delivery event              reason; refused
========================  ==========================  ====================================
Send                      ``sent``
Delivery                  ``delivered``
Bounce, Permanent         ``bounced``                 ``Permanent:<subtype>``; refused
Bounce, Undetermined      ``bounced``                 ``Undetermined:<subtype>``
Bounce, Transient         none: reported, not kept    ``Transient:<subtype>``
Complaint                 ``complained``              the feedback type (``abuse``); refused
Open                      ``opened``
Click                     ``clicked``                 the link
Reject                    ``undelivered``             ``Reject:<reason>`` (e.g. a virus)
Rendering Failure         ``undelivered``             ``RenderingFailure``
DeliveryDelay             none: reported, not kept    ``DeliveryDelay:<delayType>``
anything else             none: reported, not kept    the type
========================  ==========================  ====================================

A transient (soft) bounce is SES giving up for now on a mailbox that may take mail later (full,
too large, temporarily unavailable): not the recipient's refusal, and not final, so it changes
neither the delivery nor the recipient's preferences (the service logs it). "Refused" means the
address must not get email again: the service opts it out (``notify.webhooks.sns``).
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping

from .base import WebhookEvent
from .email import DELIVERY_ID_HEADER

#: The message tag carrying the delivery id (SES ``EmailTags`` / ``X-SES-MESSAGE-TAGS``).
DELIVERY_ID_TAG = "delivery_id"
#: ``X-SES-MESSAGE-TAGS``: how SES's SMTP interface takes message tags ("Using the Amazon SES
#: SMTP interface": ``name1=value1, name2=value2``).
SMTP_TAGS_HEADER = "X-SES-MESSAGE-TAGS"
#: The record types that are delivery events, and their event kinds (notify.models.EventKind).
RECEIPTS = {"Send": "sent", "Delivery": "delivered", "Bounce": "bounced", "Complaint": "complained",
            "Open": "opened", "Click": "clicked", "Reject": "undelivered",
            "Rendering Failure": "undelivered"}
#: Bounce types that say the address will never take mail: the address is opted out.
REFUSING_BOUNCES = frozenset({"Permanent"})
#: Bounce types that report no delivery event at all (module docstring).
PASSING_BOUNCES = frozenset({"Transient"})
#: Where each record type keeps its details (``eventType`` → key of the record).
DETAIL_KEYS = {"Send": "send", "Delivery": "delivery", "Bounce": "bounce", "Complaint": "complaint",
               "Open": "open", "Click": "click", "Reject": "reject", "Rendering Failure": "failure",
               "DeliveryDelay": "deliveryDelay", "Subscription": "subscription"}


def parse_record(record: Any, *, match_message_id: bool) -> list[WebhookEvent]:
    """The status events one SES record reports (one, or none for a record of no message).

    Args:
        record: the SNS notification's ``Message``, parsed from JSON: an event publishing record
            (``eventType``) or an identity notification (``notificationType``).
        match_message_id: put ``mail.messageId`` in ``provider_message_id`` (the SES API
            adapter stores that id for the delivery; mail sent over SMTP is stored under its
            own ``Message-ID`` header, which SES replaces, so the SMTP adapter matches by the
            delivery id alone).
    Returns:
        ``[WebhookEvent("status", ...)]`` with ``status`` the record type, ``receipt`` its
        delivery event kind or None (module docstring), ``reason``, ``refused``, ``address``
        (the bounced or complained address, else the first destination), ``occurred_at`` (the
        event's own time, else the mail's) and ``raw`` (the record without the mail's headers);
        ``[]`` when ``record`` is not an SES record.
    """
    if not isinstance(record, Mapping):
        return []
    kind = record.get("eventType") or record.get("notificationType")
    mail = record.get("mail")
    if not isinstance(kind, str) or not isinstance(mail, Mapping):
        return []
    detail = record.get(DETAIL_KEYS.get(kind, ""))
    detail = detail if isinstance(detail, Mapping) else {}
    receipt, reason, refused, address = _meaning(kind, detail)
    destination = mail.get("destination")
    if address is None and isinstance(destination, list) and destination:
        address = str(destination[0])
    return [WebhookEvent(
        "status", delivery_id=delivery_id_of(mail),
        provider_message_id=(str(mail.get("messageId") or "") or None) if match_message_id else None,
        status=kind, receipt=receipt, occurred_at=_time(detail.get("timestamp")) or _time(mail.get("timestamp")),
        reason=reason, refused=refused, address=address, raw=_kept(record, kind, mail, detail))]


def _meaning(kind: str, detail: Mapping[str, Any]) -> tuple[str | None, str | None, bool, str | None]:
    """(receipt, reason, refused, address) of a record of type ``kind`` with ``detail``."""
    if kind == "Bounce":
        bounce_type = str(detail.get("bounceType") or "Undetermined")
        reason = f"{bounce_type}:{detail.get('bounceSubType') or 'General'}"
        receipt = None if bounce_type in PASSING_BOUNCES else RECEIPTS[kind]
        return receipt, reason, bounce_type in REFUSING_BOUNCES, _first_address(detail.get("bouncedRecipients"))
    if kind == "Complaint":
        reason = detail.get("complaintFeedbackType") or detail.get("complaintSubType") or "complaint"
        return RECEIPTS[kind], str(reason), True, _first_address(detail.get("complainedRecipients"))
    if kind == "Click":
        return RECEIPTS[kind], str(detail.get("link") or "") or None, False, None
    if kind == "Reject":
        return RECEIPTS[kind], f"Reject:{detail.get('reason') or 'Rejected'}", False, None
    if kind == "Rendering Failure":
        return RECEIPTS[kind], "RenderingFailure", False, None
    if kind == "DeliveryDelay":
        return None, f"DeliveryDelay:{detail.get('delayType') or 'Undetermined'}", False, \
            _first_address(detail.get("delayedRecipients"))
    return RECEIPTS.get(kind), None, False, None


def delivery_id_of(mail: Mapping[str, Any]) -> str | None:
    """The delivery id of an SES ``mail`` object: its ``delivery_id`` tag, else the
    ``X-Notify-Delivery-Id`` header among its ``headers``; None when it has neither."""
    tags = mail.get("tags")
    if isinstance(tags, Mapping):
        values = tags.get(DELIVERY_ID_TAG)
        if isinstance(values, list) and values and values[0]:
            return str(values[0])
    headers = mail.get("headers")
    if isinstance(headers, list):
        wanted = DELIVERY_ID_HEADER.lower()
        for item in headers:
            if isinstance(item, Mapping) and str(item.get("name", "")).lower() == wanted and item.get("value"):
                return str(item["value"]).strip()
    return None


def smtp_tags_header(delivery_id: str) -> tuple[str, str]:
    """The ``X-SES-MESSAGE-TAGS`` header (name, value) tagging a mail with its delivery id."""
    return SMTP_TAGS_HEADER, f"{DELIVERY_ID_TAG}={delivery_id}"


def _first_address(recipients: Any) -> str | None:
    if isinstance(recipients, list):
        for item in recipients:
            if isinstance(item, Mapping) and item.get("emailAddress"):
                return str(item["emailAddress"])
    return None


def _time(value: Any) -> datetime.datetime | None:
    """An SES timestamp (ISO 8601, ``2016-10-19T23:21:04.133Z``) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _kept(record: Mapping[str, Any], kind: str, mail: Mapping[str, Any], detail: Mapping[str, Any]) -> dict:
    """What is worth keeping on the event row: the type, its details and the mail's ids; the
    mail's headers (the whole message head, subject included) are left out."""
    kept_mail = {key: mail[key] for key in ("messageId", "timestamp", "destination", "tags") if key in mail}
    type_key = "eventType" if "eventType" in record else "notificationType"
    return {type_key: kind, DETAIL_KEYS.get(kind, "detail"): dict(detail), "mail": kept_mail}

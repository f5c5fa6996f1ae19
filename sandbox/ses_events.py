"""SES event publishing for the sandbox's SES and SMTP ports: what SES sends to a configuration
set's SNS event destination about a mail it accepted (published on :class:`sandbox.sns.SnsTopic`).

AWS documentation (Amazon SES Developer Guide): "Contents of event data that Amazon SES publishes
to Amazon SNS" (``eventType`` Send, Delivery, Bounce, Complaint, Open, Click, Reject,
DeliveryDelay, Rendering Failure; the ``mail`` object with ``tags``), "Amazon SES notification
contents for Amazon SNS" (the older identity notifications, ``notificationType``, no tags),
"Using the mailbox simulator" and "Using the Amazon SES SMTP interface" (``X-SES-MESSAGE-TAGS:
name=value, ...`` and ``X-SES-CONFIGURATION-SET``, both removed from the mail).

By itself, after a mail is accepted: ``Send``, then, by the recipient (the mailbox simulator's
addresses, a ``+label`` allowed: ``bounce+x@simulator.amazonses.com``): ``bounce@`` → a
``Bounce`` Permanent/General, ``suppressionlist@`` → a ``Bounce`` Permanent/
OnAccountSuppressionList, ``complaint@`` → ``Delivery`` then a ``Complaint`` (abuse), any other
address → ``Delivery``; spaced by ``--callback-delay``. On demand (control API ``POST
/ses/events``): any event type about a mail accepted before, in either format.

The sandbox publishes as if every mail went through a configuration set with an SNS destination
for every event type (real SES publishes only for mail sent with one, or with its identity's
default configuration set), and only while a subscription is confirmed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from email.utils import getaddresses, parseaddr
from typing import Any

from .credentials import AWS_ACCOUNT_ID
from .sns import sns_timestamp

log = logging.getLogger("sandbox.ses_events")

SIMULATOR_DOMAIN = "simulator.amazonses.com"
#: ``eventType`` → the key of its details in the record.
DETAIL_KEYS = {"Send": "send", "Delivery": "delivery", "Bounce": "bounce", "Complaint": "complaint",
               "Open": "open", "Click": "click", "Reject": "reject", "DeliveryDelay": "deliveryDelay",
               "Rendering Failure": "failure"}
#: Event types the older identity notifications have (``format: "notification"``).
NOTIFICATION_TYPES = ("Delivery", "Bounce", "Complaint")
BOUNCE_TYPES = ("Permanent", "Transient", "Undetermined")
#: Headers SES's SMTP interface reads and removes.
SMTP_CONTROL_HEADERS = ("x-ses-message-tags", "x-ses-configuration-set")
MAX_MAILS = 10_000  # the latest mails, for events on demand
USER_AGENT = "Mozilla/5.0 (sandbox)"


class EventError(ValueError):
    """A control request for an event that cannot be made (the message says why)."""


@dataclass
class SentMail:
    """A mail SES accepted, as its events describe it.

    Attributes:
        message_id: SES's message id (``mail.messageId``).
        via: ``ses`` (API) or ``smtp`` (SMTP interface).
        source: the sender as given; destination: every recipient address.
        headers: ``[(name, value)]`` as SES reports them; subject: the subject.
        tags: message tags, name → values (``mail.tags``; SES adds its ``ses:*`` ones).
        delivery_id: the product's delivery id (its tag or ``X-Notify-Delivery-Id``), or None.
    """

    message_id: str
    via: str
    source: str
    destination: list[str]
    headers: list[tuple[str, str]]
    subject: str | None
    tags: dict[str, list[str]]
    delivery_id: str | None = None
    time: float = field(default_factory=time.time)


def new_message_id() -> str:
    """An SES-shaped message id (``0100018c...-<uuid>-000000``)."""
    return f"{int(time.time() * 1000):016x}-{uuid.uuid4()}-000000"


def api_tags(email_tags: Any) -> dict[str, list[str]]:
    """``EmailTags`` of a ``SendEmail`` request as ``mail.tags``."""
    tags: dict[str, list[str]] = {}
    for tag in email_tags if isinstance(email_tags, list) else []:
        if isinstance(tag, dict) and tag.get("Name"):
            tags.setdefault(str(tag["Name"]), []).append(str(tag.get("Value", "")))
    return tags


def smtp_tags(header_value: str | None) -> dict[str, list[str]]:
    """An ``X-SES-MESSAGE-TAGS`` header value (``name=value, name2=value2``) as ``mail.tags``."""
    tags: dict[str, list[str]] = {}
    for part in (header_value or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            tags.setdefault(name.strip(), []).append(value.strip())
    return tags


def simulated(address: str) -> str | None:
    """The mailbox simulator's behaviour for ``address`` (``bounce``, ``complaint``,
    ``suppressionlist``, ``ooto``, ``success``), or None for another address."""
    local, _, domain = parseaddr(address)[1].lower().rpartition("@")
    if domain != SIMULATOR_DOMAIN:
        return None
    return local.split("+", 1)[0]


class SesEvents:
    """Mails SES accepted and the events published about them (module docstring)."""

    def __init__(self, state, topic) -> None:
        self.state = state
        self.topic = topic
        self._region = state.creds.ses_region
        self._mails: OrderedDict[str, SentMail] = OrderedDict()
        self._by_delivery: dict[str, str] = {}
        self._lock = threading.Lock()  # the SMTP server runs on its own thread
        state.ses_events = self

    def accepted(self, mail: SentMail) -> None:
        """Remember ``mail`` and, while a subscription is confirmed, publish its events by
        themselves (module docstring). Safe from any thread; needs ``state.loop``."""
        with self._lock:
            self._mails[mail.message_id] = mail
            if mail.delivery_id:
                self._by_delivery[mail.delivery_id] = mail.message_id
            while len(self._mails) > MAX_MAILS:
                old = self._mails.popitem(last=False)[1]
                self._by_delivery.pop(old.delivery_id or "", None)
        if self.topic.confirmed() and self.state.loop is not None:
            asyncio.run_coroutine_threadsafe(self._by_themselves(mail), self.state.loop)

    def find(self, message_id: str | None = None, delivery_id: str | None = None) -> SentMail | None:
        """The accepted mail with this SES message id, or the latest one of this delivery."""
        with self._lock:
            if not message_id and delivery_id:
                message_id = self._by_delivery.get(delivery_id)
            return self._mails.get(message_id or "")

    async def _by_themselves(self, mail: SentMail) -> None:
        try:
            await self._sequence(mail)
        except Exception:  # a bug here must show, not vanish with the task
            log.exception("ses events: publishing about %s failed", mail.message_id)

    async def _sequence(self, mail: SentMail) -> None:
        first, final = self.state.callback_delays
        await asyncio.sleep(first)
        await self.emit(mail, "Send")
        await asyncio.sleep(max(final - first, 0))
        behaviour = simulated(mail.destination[0]) if mail.destination else None
        if behaviour == "bounce":
            await self.emit(mail, "Bounce", bounce_type="Permanent", bounce_subtype="General")
        elif behaviour == "suppressionlist":
            await self.emit(mail, "Bounce", bounce_type="Permanent", bounce_subtype="OnAccountSuppressionList")
        else:
            await self.emit(mail, "Delivery")
            if behaviour == "complaint":
                await asyncio.sleep(max(final - first, 0))
                await self.emit(mail, "Complaint")

    async def emit(self, mail: SentMail, event_type: str, *, fmt: str = "event", repeat: int = 1,
                   **options: Any) -> list[dict[str, Any]]:
        """Publish one record about ``mail`` (see :meth:`record`), ``repeat`` times; returns the
        SNS log entries."""
        record = self.record(mail, event_type, fmt=fmt, **options)
        return await self.topic.publish(json.dumps(record), repeat=repeat)

    def record(self, mail: SentMail, event_type: str, *, fmt: str = "event", bounce_type: str = "Permanent",
               bounce_subtype: str | None = None, feedback_type: str = "abuse", link: str = "https://example.com/",
               reason: str = "Bad content", delay_type: str = "TransientCommunicationFailure") -> dict[str, Any]:
        """The SES record of one event about ``mail``.

        Args:
            fmt: ``event`` (event publishing: ``eventType``, the mail's tags) or
                ``notification`` (identity notifications: ``notificationType``, no tags; only
                Delivery, Bounce, Complaint).
            bounce_type, bounce_subtype: a Bounce's (subtype default: General, or MailboxFull
                for a Transient one).
            feedback_type: a Complaint's ``complaintFeedbackType``; link: a Click's;
            reason: a Reject's; delay_type: a DeliveryDelay's.
        Raises:
            EventError: an unknown type, format or bounce type.
        """
        if event_type not in DETAIL_KEYS:
            raise EventError(f"event_type must be one of {list(DETAIL_KEYS)}")
        if fmt not in ("event", "notification") or (fmt == "notification" and event_type not in NOTIFICATION_TYPES):
            raise EventError(f"format must be 'event', or 'notification' for {list(NOTIFICATION_TYPES)}")
        if bounce_type not in BOUNCE_TYPES:
            raise EventError(f"bounce_type must be one of {list(BOUNCE_TYPES)}")
        now = sns_timestamp()
        recipients = list(mail.destination)
        details: dict[str, Any]
        if event_type == "Send":
            details = {}
        elif event_type == "Delivery":
            details = {"timestamp": now, "processingTimeMillis": int((time.time() - mail.time) * 1000),
                       "recipients": recipients, "smtpResponse": "250 2.6.0 Message received",
                       "reportingMTA": "a8-70.smtp-out.amazonses.com", "remoteMtaIp": "127.0.0.1"}
        elif event_type == "Bounce":
            subtype = bounce_subtype or ("MailboxFull" if bounce_type == "Transient" else
                                         "Undetermined" if bounce_type == "Undetermined" else "General")
            status, code = ("4.2.2", "452 4.2.2 Mailbox full") if bounce_type == "Transient" else \
                ("5.1.1", "550 5.1.1 user unknown")
            details = {"bounceType": bounce_type, "bounceSubType": subtype,
                       "bouncedRecipients": [{"emailAddress": r, "action": "failed", "status": status,
                                              "diagnosticCode": f"smtp; {code}"} for r in recipients],
                       "timestamp": now, "feedbackId": new_message_id(),
                       "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"}
        elif event_type == "Complaint":
            details = {"complainedRecipients": [{"emailAddress": r} for r in recipients], "timestamp": now,
                       "feedbackId": new_message_id(), "userAgent": "sandbox-feedback-loop",
                       "complaintFeedbackType": feedback_type, "arrivalDate": now}
        elif event_type in ("Open", "Click"):
            details = {"ipAddress": "192.0.2.1", "timestamp": now, "userAgent": USER_AGENT}
            if event_type == "Click":
                details.update(link=link, linkTags={})
        elif event_type == "Reject":
            details = {"reason": reason}
        elif event_type == "DeliveryDelay":
            details = {"timestamp": now, "delayType": delay_type, "expirationTime": now,
                       "delayedRecipients": [{"emailAddress": r, "status": "4.4.1",
                                              "diagnosticCode": "smtp; 421 4.4.1 Unable to connect"}
                                             for r in recipients]}
        else:  # Rendering Failure
            details = {"errorMessage": "Attribute 'name' is not present in the rendering data.",
                       "templateName": "sandbox"}
        type_key = "eventType" if fmt == "event" else "notificationType"
        return {type_key: event_type, "mail": self._mail(mail, with_tags=fmt == "event"),
                DETAIL_KEYS[event_type]: details}

    def _mail(self, mail: SentMail, *, with_tags: bool) -> dict[str, Any]:
        sender = parseaddr(mail.source)[1]
        domain = sender.rpartition("@")[2]
        header_map = {name.lower(): value for name, value in mail.headers}
        doc: dict[str, Any] = {
            "timestamp": sns_timestamp(mail.time), "source": mail.source,
            "sourceArn": f"arn:aws:ses:{self._region}:{AWS_ACCOUNT_ID}:identity/{domain}",
            "sendingAccountId": AWS_ACCOUNT_ID, "messageId": mail.message_id,
            "destination": list(mail.destination), "headersTruncated": False,
            "headers": [{"name": name, "value": value} for name, value in mail.headers],
            "commonHeaders": {"from": [mail.source],
                              "to": [a for _, a in getaddresses([header_map.get("to", "")]) if a]
                              or list(mail.destination),
                              "messageId": mail.message_id, "subject": mail.subject or ""},
        }
        if with_tags:
            doc["tags"] = {"ses:operation": ["SendEmail" if mail.via == "ses" else "SendSmtpEmail"],
                           "ses:source-ip": ["127.0.0.1"], "ses:from-domain": [domain],
                           "ses:caller-identity": ["sandbox"], **mail.tags}
        return doc

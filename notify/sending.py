"""The accept path of a send request: validate, apply preferences and rate limits, render,
and write the notification and its deliveries, which puts them in the outbox
(notify.publishing): the relay publishes them once the transaction has committed.

Queries on a warm cache: one idempotency look-up (only with a key), then one statement that
inserts the notification and its deliveries and notifies the relay. Nothing here waits on
RabbitMQ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from channels.registry import CHANNELS

from . import breaker, cache
from .content import CHANNEL_GROUP, check_content
from .errors import SendRejected
from .models import Delivery, DeliveryLog, DeliveryStatus, Device, Notification
from .publishing import OUTBOX_EVENT
from .ratelimit import over_limit
from .sql import prepared_cursor
from .rendering import RenderError, render_content



@dataclass(frozen=True)
class Accepted:
    """The answer of :func:`submit`: ``status`` 202, ``body`` the JSON response, ``replayed``
    True when an earlier request with the same idempotency key produced it."""

    body: dict
    replayed: bool = False


def request_hash(payload: dict) -> str:
    """SHA-256 of the canonical JSON of a send request (tells a replay from a different body)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _existing(app_id: int, key: str, digest: str) -> Accepted | None:
    with prepared_cursor() as cursor:
        cursor.execute("SELECT request_hash, response FROM notify_notification WHERE app_id = %s AND idempotency_key = %s",
                       [app_id, key])
        row = cursor.fetchone()
    if row is None:
        return None
    stored_hash, response = row
    if stored_hash != digest:
        raise SendRejected("idempotency_key_reused", "this Idempotency-Key was used with a different request body",
                           status=409)
    return Accepted(json.loads(response), replayed=True)  # Django's connection loads jsonb as text


def _addresses(channel: str, profile: dict) -> list[tuple[int | None, str]]:
    """(device id or None, address) pairs of a recipient on one channel."""
    if channel == "sms":
        return [(None, profile["phone"])] if profile["phone"] else []
    if channel == "email":
        return [(None, profile["email"])] if profile["email"] else []
    return [(d["id"], d["token"]) for d in profile["devices"] if Device.CHANNEL[d["platform"]] == channel]


def _opted_in(profile: dict, channel: str, category: str) -> bool:
    prefs = profile["preferences"]
    for key in (f"{channel}|{category}", f"{channel}|"):
        if key in prefs:
            return prefs[key]
    return True


def _content(app_id: int, payload: dict, profile: dict) -> tuple[dict, dict | None]:
    if payload.get("template"):
        template = cache.load_template(app_id, payload["template"])
        if template is None:
            raise SendRejected("template_not_found", f"no template named {payload['template']!r}", status=404,
                               fields={"template": ["not found"]})
        try:
            rendered = render_content(template, payload.get("data") or {}, profile)
        except RenderError as exc:
            raise SendRejected("template_error", str(exc), status=422, fields={"template": [str(exc)]}) from None
        return rendered, template
    return payload["content"], None


@dataclass
class Planned:
    """A send request turned into rows, not yet written."""

    notification: Notification
    deliveries: list[Delivery]
    body: dict


def plan(app_id: int, api_key_id: str | None, payload: dict, idempotency_key: str | None,
         digest: str | None = None) -> Planned:
    """Validate one send request against the recipient, preferences, rate limits and templates,
    and build its notification and delivery rows (nothing is written).

    Raises:
        SendRejected: unknown recipient or template, unusable content.
    """
    profile = cache.load_profile(app_id, payload["recipient"])
    if profile is None:
        raise SendRejected("recipient_not_found", f"no recipient {payload['recipient']!r}", status=404,
                           fields={"recipient": ["not found"]})
    raw_content, template = _content(app_id, payload, profile)
    content = check_content(raw_content)
    category = payload.get("category") or (template or {}).get("category") or "general"

    requested = payload.get("channels")
    allowed: list[tuple[str, list]] = []
    deliveries: list[Delivery] = []
    summary: list[dict] = []
    notification_id = uuid.uuid4()
    now = timezone.now()

    def add(channel: str, device_id: int | None, address: str, status: str, reason: str = "") -> None:
        delivery = Delivery(id=uuid.uuid4(), notification_id=notification_id, channel=channel, device_id=device_id,
                            address=address, status=status, reason=reason)
        deliveries.append(delivery)
        summary.append({"id": str(delivery.id), "channel": channel, "to": address or None,
                        "status": status, "reason": reason or None})

    for channel in requested or CHANNELS:
        group = CHANNEL_GROUP[channel]
        if group not in content:
            if requested:
                raise SendRejected("no_content_for_channel", f"no {group} content for channel {channel}",
                                   status=422, fields={"channels": [f"{channel} has no {group} content"]})
            continue
        addresses = _addresses(channel, profile)
        if not addresses:
            if requested:
                add(channel, None, "", DeliveryStatus.SUPPRESSED, "no_address" if channel in ("sms", "email") else "no_device")
            continue
        if not _opted_in(profile, channel, category):
            for device_id, address in addresses:
                add(channel, device_id, address, DeliveryStatus.SUPPRESSED, "opted_out")
            continue
        allowed.append((channel, addresses))

    limited = over_limit(app_id, profile["id"], [channel for channel, _ in allowed])
    for channel, addresses in allowed:
        held = breaker.state(channel) != breaker.CLOSED
        for device_id, address in addresses:
            if channel in limited:
                add(channel, device_id, address, DeliveryStatus.SUPPRESSED, "rate_limited")
            elif held:
                # The provider is failing for everyone right now: park the delivery for the
                # dispatcher instead of queueing a task that could only be rescheduled.
                add(channel, device_id, address, DeliveryStatus.RETRYING, "circuit_open")
                deliveries[-1].next_attempt_at = now + dt.timedelta(seconds=breaker.cooldown())
            else:
                add(channel, device_id, address, DeliveryStatus.QUEUED)

    if not deliveries:
        raise SendRejected("no_channel", "the recipient has no address on any channel with content", status=422,
                           fields={"recipient": ["no device, phone or email for this content"]})

    ttl = payload.get("ttl") or settings.NOTIFY_DEFAULT_TTL
    body = {"id": str(notification_id), "event_id": idempotency_key, "deliveries": summary}
    notification = Notification(
        id=notification_id, app_id=app_id, api_key_id=api_key_id, recipient_id=profile["id"],
        idempotency_key=idempotency_key, request_hash=digest or request_hash(payload), category=category,
        template_id=template["id"] if template else None, template_version=template["version"] if template else None,
        data=payload.get("data") or {}, content=content, priority=payload.get("priority") or "normal",
        ttl=ttl, expires_at=now + dt.timedelta(seconds=ttl), response=body,
    )
    return Planned(notification, deliveries, body)


_INSERT_SQL = """
WITH notification AS (
    INSERT INTO notify_notification (id, app_id, api_key_id, recipient_id, idempotency_key, request_hash,
        category, template_id, template_version, data, content, priority, ttl, expires_at, response, created_at)
    SELECT *, now() FROM unnest(%(n_id)s::uuid[], %(n_app)s::bigint[], %(n_key)s::varchar[], %(n_recipient)s::bigint[],
        %(n_idem)s::varchar[], %(n_hash)s::varchar[], %(n_category)s::varchar[], %(n_template)s::bigint[],
        %(n_version)s::int[], %(n_data)s::jsonb[], %(n_content)s::jsonb[], %(n_priority)s::varchar[],
        %(n_ttl)s::int[], %(n_expires)s::timestamptz[], %(n_response)s::jsonb[])
    RETURNING 1
), delivery AS (
    INSERT INTO notify_delivery (id, notification_id, channel, device_id, address, status, reason, attempts,
        provider_message_id, last_error, created_at, updated_at, next_attempt_at, unknown_outcome)
    SELECT id, notification_id, channel, device_id, address, status, reason, 0, '', '', now(), now(),
           next_attempt_at, false
    FROM unnest(%(d_id)s::uuid[], %(d_notification)s::uuid[], %(d_channel)s::varchar[], %(d_device)s::bigint[],
                %(d_address)s::text[], %(d_status)s::varchar[], %(d_reason)s::varchar[],
                %(d_next)s::timestamptz[])
         AS d(id, notification_id, channel, device_id, address, status, reason, next_attempt_at)
    RETURNING status
)
-- Wake the outbox relay at commit if anything is queued (see notify.publishing.wake_relay).
-- Timestamps come from the database's clock, as the relay's and the worker's do.
SELECT (SELECT count(*) FROM notification),
       (SELECT count(*) FROM (SELECT pg_notify(%(event)s::text, '') FROM delivery WHERE status = 'queued' LIMIT 1) w)
"""


def _insert_params(planned: list[Planned]) -> dict:
    notifications = [p.notification for p in planned]
    deliveries = [d for p in planned for d in p.deliveries]
    return {
        "event": OUTBOX_EVENT,
        "n_id": [n.id for n in notifications], "n_app": [n.app_id for n in notifications],
        "n_key": [n.api_key_id for n in notifications], "n_recipient": [n.recipient_id for n in notifications],
        "n_idem": [n.idempotency_key for n in notifications], "n_hash": [n.request_hash for n in notifications],
        "n_category": [n.category for n in notifications], "n_template": [n.template_id for n in notifications],
        "n_version": [n.template_version for n in notifications],
        "n_data": [Jsonb(n.data) for n in notifications], "n_content": [Jsonb(n.content) for n in notifications],
        "n_priority": [n.priority for n in notifications], "n_ttl": [n.ttl for n in notifications],
        "n_expires": [n.expires_at for n in notifications], "n_response": [Jsonb(n.response) for n in notifications],
        "d_id": [d.id for d in deliveries], "d_notification": [d.notification_id for d in deliveries],
        "d_channel": [d.channel for d in deliveries], "d_device": [d.device_id for d in deliveries],
        "d_address": [d.address for d in deliveries], "d_status": [d.status for d in deliveries],
        "d_reason": [d.reason for d in deliveries], "d_next": [d.next_attempt_at for d in deliveries],
    }


def write(planned: list[Planned]) -> None:
    """Insert the notifications and deliveries in one transaction; its commit wakes the outbox
    relay, which publishes the queued ones. Raises IntegrityError on an idempotency-key race.

    One (prepared) statement inserts every row (arrays through ``unnest``) and wakes the relay: on
    the API's hot path the ORM's per-object work for ``bulk_create`` cost more than the database
    did."""
    with transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute(_INSERT_SQL, _insert_params(planned))
        parked = [d for p in planned for d in p.deliveries if d.status == DeliveryStatus.RETRYING]
        if parked:
            DeliveryLog.objects.bulk_create(DeliveryLog(delivery_id=d.id, from_status="", to_status="retrying",
                                                        reason=d.reason) for d in parked)


def submit(app_id: int, api_key_id: str | None, payload: dict, idempotency_key: str | None) -> Accepted:
    """Accept one send request.

    Args:
        app_id: the calling app (from its API key).
        api_key_id: the API key's id, kept on the notification for audit.
        payload: the validated request (see ``notify.api.serializers.SendSerializer``).
        idempotency_key: the ``Idempotency-Key`` header or ``event_id``; None for none.

    Returns:
        Accepted with the 202 body ``{"id", "event_id", "deliveries": [{"id", "channel", "to",
        "status", "reason"}]}``.

    Raises:
        SendRejected: unknown recipient or template, unusable content, reused idempotency key with
            another body. Nothing is written or queued in that case.
    """
    digest = request_hash(payload)
    if idempotency_key:
        earlier = _existing(app_id, idempotency_key, digest)
        if earlier:
            return earlier
    planned = plan(app_id, api_key_id, payload, idempotency_key, digest)
    try:
        write([planned])
    except IntegrityError:
        # A concurrent request with the same key won the insert: answer with its response.
        if idempotency_key:
            earlier = _existing(app_id, idempotency_key, digest)
            if earlier:
                return earlier
        raise
    return Accepted(planned.body)


class BatchRejected(SendRejected):
    """Some items of a batch are refused; ``items`` maps the item's index to its error body."""

    def __init__(self, items: dict[int, dict]):
        super().__init__("batch_rejected", f"{len(items)} notification(s) of the batch are refused; nothing was sent",
                         status=400)
        self.items = items


def submit_batch(app_id: int, api_key_id: str | None, items: list[tuple[dict, str | None]]) -> list[Accepted]:
    """Accept many send requests at once: all or none.

    One query finds earlier idempotency keys, each new item is planned, and all rows are written
    in one transaction (the per-request costs of a single send are paid once per batch).

    Args:
        items: ``(payload, idempotency_key)`` pairs, as for :func:`submit`.
    Returns:
        One Accepted per item, in order (replays of earlier keys included).
    Raises:
        BatchRejected: one or more items are invalid (duplicate key in the batch, key reused with
            another body, unknown recipient, ...); nothing is written or queued.
    """
    for _ in range(2):  # a second pass only after losing an idempotency-key race
        keys = [key for _, key in items if key]
        earlier = {row["idempotency_key"]: row for row in Notification.objects.filter(
            app_id=app_id, idempotency_key__in=keys).values("idempotency_key", "request_hash", "response")}
        results: list[Accepted | None] = []
        planned: list[Planned] = []
        errors: dict[int, dict] = {}
        seen: set[str] = set()
        for index, (payload, key) in enumerate(items):
            try:
                if key:
                    if key in seen:
                        raise SendRejected("duplicate_idempotency_key", "the same key twice in one batch")
                    seen.add(key)
                if key in earlier:
                    if earlier[key]["request_hash"] != request_hash(payload):
                        raise SendRejected("idempotency_key_reused",
                                           "this Idempotency-Key was used with a different request body", status=409)
                    results.append(Accepted(earlier[key]["response"], replayed=True))
                    continue
                planned.append(plan(app_id, api_key_id, payload, key))
                results.append(Accepted(planned[-1].body))
            except SendRejected as exc:
                errors[index] = {"code": exc.code, "message": str(exc), "fields": exc.fields}
                results.append(None)
        if errors:
            raise BatchRejected(errors)
        try:
            if planned:
                write(planned)
            return results  # type: ignore[return-value]
        except IntegrityError:
            continue
    raise SendRejected("conflict", "idempotency keys of this batch are being used concurrently; retry", status=409)

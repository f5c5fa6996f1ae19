"""Accept: the API's side of a send. Validate the request, plan its deliveries (the recipient's
addresses, preferences, the providers' content rules), and write the notification and its
deliveries, which puts them in the outbox (notify.outbox publishes them after commit). Rate
limits are counted when a delivery is sent (notify.ratelimit), not here: a refused request uses
up nothing.

Round trips on a warm cache: one statement that inserts everything and wakes the relay
(notify.store); a replayed idempotency key is found by that insert's refusal, then looked up.
Nothing here waits on RabbitMQ.

Channel knowledge comes only from the adapters' declarations (channels.registry): which content
group a channel carries, what kind of address it sends to, and its content limits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from channels import registry
from channels.base import AddressKind
from channels.errors import InvalidMessage

from . import breaker, cache, ids, metrics, policy, providers, store
from .errors import SendRejected
from .models import DeliveryStatus
from .rendering import MissingVariables, RenderError, assign_variant, render_parts, select_locale
from .truncation import checked as checked_part


@dataclass(frozen=True)
class Accepted:
    """The answer of :func:`submit`: ``body`` the 202 JSON response, ``replayed`` True when an
    earlier request with the same idempotency key produced it."""

    body: dict
    replayed: bool = False


def request_hash(payload: dict) -> str:
    """SHA-256 of the canonical JSON of a send request (tells a replay from a different body); a
    ``send_at`` counts as its instant (the serializer gives it in UTC, whatever offset was sent)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                     default=dt.datetime.isoformat).encode()).hexdigest()


@dataclass
class PlannedDelivery:
    """A delivery row to be written: ``wait`` is seconds until it may be tried (parked ones)."""

    id: uuid.UUID
    notification_id: uuid.UUID
    channel: str
    device_id: int | None
    address: str
    status: str
    reason: str = ""
    wait: float = 0.0
    variant: str = ""
    step: int = 0  # its place in the notification's fallback order
    due: dt.datetime | None = None  # a scheduled one's instant (send_at, quiet hours' end), instead of wait


@dataclass
class PlannedNotification:
    """A notification row to be written (the Notification model's columns)."""

    id: uuid.UUID
    app_id: int
    api_key_id: str | None
    recipient_id: int
    idempotency_key: str | None
    request_hash: str
    category: str
    template_id: int | None
    template_version: int | None
    locale: str
    data: dict
    content: dict
    priority: str
    ttl: int
    expires_at: dt.datetime
    response: dict = field(default_factory=dict)
    send_at: dt.datetime | None = None
    fallback: list = field(default_factory=list)  # steps, each a list of channels


@dataclass
class Planned:
    """A send request turned into rows, not yet written."""

    notification: PlannedNotification
    deliveries: list[PlannedDelivery]
    body: dict


def addresses(channel: str, profile: dict) -> list[tuple[int | None, str]]:
    """``(device id or None, address)`` pairs of a recipient on ``channel``, by the kind of
    address the channel declares."""
    cls = registry.channel_class(channel)
    if cls.address_kind is AddressKind.PHONE:
        return [(None, profile["phone"])] if profile["phone"] else []
    if cls.address_kind is AddressKind.EMAIL:
        return [(None, profile["email"])] if profile["email"] else []
    return [(d["id"], d["token"]) for d in profile["devices"] if d["platform"] == cls.platform]


def fallback_steps(items: list[str]) -> list[list[str]]:
    """A send's ``fallback`` (channels or content groups, in order) as steps of channels:
    ``push, sms`` → ``[[apns, fcm, webpush], [sms]]`` (a group: its enabled channels,
    channels.registry.channels_in_group).

    Raises:
        ValueError: a name that is neither, or a channel named twice (``push, apns`` too).
    """
    steps: list[list[str]] = []
    seen: set[str] = set()
    for item in items:
        step = [item] if item in registry.channels() else list(registry.channels_in_group(item))
        if not step:
            raise ValueError(f"{item!r} is neither a channel nor a content group")
        twice = [channel for channel in step if channel in seen]
        if twice:
            raise ValueError(f"{', '.join(twice)} named twice" + (f" ({item} includes it)" if item not in step else ""))
        seen.update(step)
        steps.append(step)
    return steps


def _instant(epoch: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc) if epoch is not None else None


@dataclass(frozen=True)
class Content:
    """What a send says: the rendered content per group, and where it came from."""

    parts: dict
    template: dict | None = None
    locale: str = ""
    variant: str = ""


def require_template(template: dict | None, name: str) -> dict:
    """``template`` (as notify.cache.load_template gives it) when it can be sent.

    Raises:
        SendRejected: ``template_not_found`` (404) when there is no template ``name`` or it is
            archived; ``template_version_not_found`` (404) when it has no such published version.
    """
    if template is None or template["archived"]:
        raise SendRejected("template_not_found", f"no template named {name!r}", status=404,
                           fields={"template": ["not found"]})
    if template["version"] is None:
        raise SendRejected("template_version_not_found", "no such published version of this template", status=404,
                           fields={"template_version": ["not a published version"]})
    return template


def _content(app_id: int, payload: dict, profile: dict, template: dict | None,
             groups: tuple[str, ...] | None) -> Content:
    """The send's content: its explicit ``content``, or its template (``template``: as
    notify.cache.load_template gives it, None when there is no such template) rendered for this
    recipient (version pinned or latest published, variant by weight, locale by fallback). Only
    the ``groups`` the send can use are rendered (all of the template's when None)."""
    if not payload.get("template"):
        return Content(payload["content"])
    require_template(template, payload["template"])
    variant = assign_variant(template["variants"], f"{app_id}:{profile['external_id']}",
                             f"{template['id']}:{template['version']}")
    source = variant["content"] if variant else template["content"]
    locale = select_locale(source, profile.get("locale"), template["default_locale"])
    parts = source[locale]
    try:
        rendered = render_parts(parts, groups if groups is not None else tuple(parts), payload.get("data") or {},
                                profile)
    except MissingVariables as exc:
        raise SendRejected("missing_variables", str(exc), status=400,
                           fields={"data": [f"missing: {name}" for name in exc.names]}) from None
    except RenderError as exc:
        raise SendRejected("template_error", str(exc), status=422, fields={"template": [str(exc)]}) from None
    return Content(rendered, template, locale, variant["name"] if variant else "")


def check_content(channel: str, group: str, content: dict, checked: dict[str, dict], truncate: bool = False,
                  configs: dict[str, dict] | None = None) -> dict:
    """Ask the channel's adapter whether its provider would take ``content[group]``; returns what
    the adapter reports about it (e.g. SMS encoding and segments). ``checked`` caches per channel.
    ``configs`` (channel → notify.providers.content_config), when given, keeps each channel's
    config for the next calls: a bulk call checks 10,000 items with one config per channel.

    With ``truncate`` (the template's ``truncate_push``), a body too large for the provider is
    cut on grapheme-cluster boundaries until it fits (``content[group]`` is replaced), instead of
    refusing the send.

    Raises:
        SendRejected: 422 with the adapter's reason code (``payload_too_large``,
            ``invalid_header``, ...) and the content group as the field.
    """
    if channel not in checked:
        cls = registry.channel_class(channel)
        config = configs.get(channel) if configs is not None else None
        if config is None:
            config = providers.content_config(channel)
            if configs is not None:
                configs[channel] = config
        try:
            content[group], checked[channel], _ = checked_part(cls, content[group], config, truncate)
        except InvalidMessage as exc:
            raise SendRejected(exc.reason, f"{channel}: {exc}", status=422,
                               fields={f"content.{group}": [f"{channel}: {exc}"]}) from None
    return checked[channel]



def _release(payload: dict, profile: dict, rules: policy.Rules, app_quiet_hours: str, now: dt.datetime,
             due: dt.datetime) -> tuple[dt.datetime | None, str]:
    """When a send's deliveries may go, if not now: ``(instant, reason)``, or ``(None, "")``.

    Quiet hours (the recipient's, else the category's, else the app's; notify.policy) that hold
    at the due instant hold it until they end (``quiet_hours``), except for ``priority: high``
    and a required category; else a ``send_at`` in the future holds it until then
    (``scheduled``).
    """
    if payload.get("priority") != "high" and not rules.required:
        window = policy.quiet_hours_of(profile["quiet_hours"], rules.quiet_hours, app_quiet_hours)
        until = policy.quiet_until(due, profile["timezone"], window)
        if until is not None:
            return until, "quiet_hours"
    if due > now:
        return due, "scheduled"
    return None, ""


def plan(app_id: int, api_key_id: str | None, payload: dict, idempotency_key: str | None,
         digest: str | None = None, now: dt.datetime | None = None,
         context: cache.SendContext | None = None, configs: dict[str, dict] | None = None) -> Planned:
    """Validate one send request against the recipient, preferences, templates
    and the providers' content rules, and build its rows (nothing is written).

    ``now`` (aware) is the instant the send is accepted at, for the mute, quiet hours and
    ``send_at`` (None: the clock; a test gives an instant across a daylight-saving change).
    ``context``: the recipient's profile, template and categories already loaded (a bulk send
    loads them for all its items at once, notify.bulk); None loads them here. ``configs``: the
    providers' content configs kept across the plans of one call (:func:`check_content`).

    Raises:
        SendRejected: unknown recipient or template, content a provider would refuse, no
            channel to send on.
    """
    # The profile, the template and the categories in one Redis round trip.
    if context is None:
        context = cache.load_send_context(app_id, payload["recipient"], payload.get("template"),
                                          payload.get("template_version"))
    profile = context.profile
    if profile is None:
        raise SendRejected("recipient_not_found", f"no recipient {payload['recipient']!r}", status=404,
                           fields={"recipient": ["not found"]})
    steps = fallback_steps(payload["fallback"]) if payload.get("fallback") else []
    # A fallback's channels are requested ones: content for each, a row for each (suppressed
    # where there is no address), so no step can fail later on content.
    requested = payload.get("channels") or [channel for step in steps for channel in step]
    step_of = {channel: index for index, step in enumerate(steps) for channel in step}
    groups = tuple(dict.fromkeys(registry.channel_class(c).content_group for c in requested)) if requested else None
    rendered = _content(app_id, payload, profile, context.template, groups)
    content, template = rendered.parts, rendered.template
    truncate = bool(template and template["truncate_push"])
    category = payload.get("category") or (template or {}).get("category") or "general"
    app_rules = context.categories
    rules = policy.rules(app_rules["categories"].get(category), category)
    now = now or timezone.now()
    send_at = payload.get("send_at")
    # When the send is due: its send_at, or now (a send_at the serializer let through a moment
    # in the past is due now). The recipient's decisions are read for that instant.
    due = max(send_at, now) if send_at else now
    muted = not rules.required and policy.is_muted(profile["muted"], _instant(profile["muted_until"]), due)
    release, held_reason = _release(payload, profile, rules, app_rules["quiet_hours"], now, due)

    allowed: list[tuple[str, list]] = []
    deliveries: list[PlannedDelivery] = []
    summary: list[dict] = []
    checked: dict[str, dict] = {}
    notification_id = ids.new_id()

    def add(channel: str, device_id: int | None, address: str, status: str, reason: str = "",
            wait: float = 0.0) -> None:
        delivery = PlannedDelivery(ids.new_id(), notification_id, channel, device_id, address, status, reason, wait,
                                   rendered.variant, step_of.get(channel, 0))
        deliveries.append(delivery)
        entry = {"id": str(delivery.id), "channel": channel, "to": address or None,
                 "status": status, "reason": reason or None}
        if steps:
            entry["step"] = delivery.step
        if status == DeliveryStatus.SCHEDULED:
            delivery.due = release
            entry["scheduled_for"] = release.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        if checked.get(channel):
            entry["content_info"] = checked[channel]
        summary.append(entry)

    for channel in requested or registry.channels():
        cls = registry.channel_class(channel)
        group = cls.content_group
        if group not in content:
            if requested:
                raise SendRejected("no_content_for_channel", f"no {group} content for channel {channel}",
                                   status=422, fields={"fallback" if steps else "channels":
                                                       [f"{channel} has no {group} content"]})
            continue
        found = addresses(channel, profile)
        if not found:
            if requested:
                add(channel, None, "", DeliveryStatus.SUPPRESSED,
                    "no_device" if cls.address_kind.is_device else "no_address")
            continue
        # A suppressed address (a hard bounce, a complaint) holds for every category, required
        # ones too; profiles cached before the key existed have none.
        refusal = (profile.get("suppressed", {}).get(channel)
                   or ("opted_out" if not policy.opted_in(policy.preference_of(profile["preferences"], channel,
                                                                                category), rules, channel)
                       else "muted" if muted else ""))
        if refusal:
            for device_id, address in found:
                add(channel, device_id, address, DeliveryStatus.SUPPRESSED, refusal)
            continue
        # Content is checked only for the channels this send will use.
        check_content(channel, group, content, checked, truncate, configs)
        allowed.append((channel, found))

    # A fallback's steps in order (a send without one is one step): the first step with a row
    # that can go is sent now; the later steps' rows wait on standby (counted against the rate
    # limit only if they are sent) for notify.store.advance_fallback.
    sending_step = None
    # A send not due yet goes to the dispatcher whatever its providers' state.
    held_channels = [] if release else providers.held_channels(channel for channel, _ in allowed)
    for index in range(max(len(steps), 1)):
        members = [(channel, found) for channel, found in allowed if step_of.get(channel, 0) == index]
        if sending_step is not None:
            for channel, found in members:
                for device_id, address in found:
                    add(channel, device_id, address, DeliveryStatus.STANDBY, "fallback")
            continue
        before = len(deliveries)
        for channel, found in members:
            held = channel in held_channels
            for device_id, address in found:
                if release:
                    # Not due yet (send_at, quiet hours): the dispatcher queues it at release;
                    # a provider failing now does not matter yet.
                    add(channel, device_id, address, DeliveryStatus.SCHEDULED, held_reason)
                elif held:
                    # Every provider of the channel is failing for everyone right now: park the
                    # delivery for the dispatcher instead of queueing a task that could only wait.
                    add(channel, device_id, address, DeliveryStatus.RETRYING, breaker.CIRCUIT_OPEN, breaker.cooldown())
                else:
                    add(channel, device_id, address, DeliveryStatus.QUEUED)
        if any(d.status != DeliveryStatus.SUPPRESSED for d in deliveries[before:]):
            sending_step = index

    if not deliveries:
        raise SendRejected("no_channel", "the recipient has no address on any channel with content", status=422,
                           fields={"recipient": ["no device, phone or email for this content"]})

    ttl = payload.get("ttl") or settings.NOTIFY_DEFAULT_TTL
    body = {"id": str(notification_id), "event_id": idempotency_key, "deliveries": summary}
    if template:
        body["template"] = {"name": template["name"], "version": template["version"], "locale": rendered.locale,
                            "variant": rendered.variant or None}
    notification = PlannedNotification(
        id=notification_id, app_id=app_id, api_key_id=api_key_id, recipient_id=profile["id"],
        idempotency_key=idempotency_key, request_hash=digest or request_hash(payload), category=category,
        template_id=template["id"] if template else None, template_version=template["version"] if template else None,
        locale=rendered.locale, data=payload.get("data") or {}, content=content, priority=payload.get("priority") or "normal",
        # A scheduled send's TTL counts from when it is due.
        ttl=ttl, expires_at=due + dt.timedelta(seconds=ttl), response=body, fallback=steps, send_at=send_at,
    )
    return Planned(notification, deliveries, body)


def write(planned: list[Planned]) -> None:
    """Insert the notifications and deliveries; the commit wakes the outbox relay, which
    publishes the queued ones. Raises IntegrityError on an idempotency-key race.

    One statement (notify.store.insert_notifications), so all or nothing without a transaction
    around it: outside one it is a single autocommit round trip instead of BEGIN, INSERT and
    COMMIT; inside a caller's transaction it joins it, under a savepoint, so that a refused
    insert (a taken idempotency key, which the caller then looks up) leaves that transaction
    usable."""
    notifications = [p.notification for p in planned]
    deliveries = [d for p in planned for d in p.deliveries]
    if connection.in_atomic_block:
        with transaction.atomic():
            store.insert_notifications(notifications, deliveries)
    else:
        store.insert_notifications(notifications, deliveries)
    metrics.record_accept(planned)


def require_same_request(stored_hash: str, digest: str) -> None:
    """Check that a request replaying an idempotency key has the body (:func:`request_hash`)
    the key was first used with.

    Raises:
        SendRejected: 409 ``idempotency_key_reused`` when the hashes differ.
    """
    if stored_hash != digest:
        raise SendRejected("idempotency_key_reused", "this Idempotency-Key was used with a different request body",
                           status=409)


def _replay(earlier: tuple[str, dict] | None, digest: str) -> Accepted | None:
    if earlier is None:
        return None
    stored_hash, response = earlier
    require_same_request(stored_hash, digest)
    return Accepted(response, replayed=True)


def submit(app_id: int, api_key_id: str | None, payload: dict, idempotency_key: str | None) -> Accepted:
    """Accept one send request.

    Args:
        app_id: the calling app (from its API key).
        api_key_id: the API key's id, kept on the notification for audit.
        payload: the validated request (see ``notify.api.serializers.SendSerializer``).
        idempotency_key: the ``Idempotency-Key`` header or ``event_id``; None for none.

    Returns:
        Accepted with the 202 body ``{"id", "event_id", "deliveries": [{"id", "channel", "to",
        "status", "reason", "step"?, "content_info"?}]}`` (``step``: with a fallback, the
        delivery's step; ``content_info``: what the channel's adapter reports about the content,
        e.g. SMS encoding and segments).

    Raises:
        SendRejected: unknown recipient or template, unusable content, reused idempotency key with
            another body. Nothing is written or queued in that case.
    """
    digest = request_hash(payload)
    # No look-up of the key first: a new request (nearly all of them) is one statement, and the
    # key's unique index finds a replay when the insert is refused. A replay pays for a plan.
    try:
        planned = plan(app_id, api_key_id, payload, idempotency_key, digest)
    except SendRejected:
        # A replay answers as the first time did, even when the request would now be refused
        # (its recipient erased, its template archived).
        earlier = _earlier(app_id, idempotency_key, digest)
        if earlier:
            return earlier
        raise
    try:
        write([planned])
    except IntegrityError:
        # The key is taken: by an earlier request, or a concurrent one that won the insert.
        earlier = _earlier(app_id, idempotency_key, digest)
        if earlier:
            return earlier
        raise
    return Accepted(planned.body)


def _earlier(app_id: int, idempotency_key: str | None, digest: str) -> Accepted | None:
    """The replayed answer of the earlier request with ``idempotency_key``, None when there was
    none (or no key). Raises SendRejected 409 when that request had another body."""
    if not idempotency_key:
        return None
    return _replay(store.idempotent_responses(app_id, [idempotency_key]).get(idempotency_key), digest)


class BatchRejected(SendRejected):
    """Some items of a batch are refused; ``items`` maps the item's index to its error body."""

    def __init__(self, items: dict[int, dict]):
        super().__init__("batch_rejected", f"{len(items)} notification(s) of the batch are refused; nothing was sent",
                         status=400)
        self.items = items


def submit_batch(app_id: int, api_key_id: str | None, items: list[tuple[dict, str | None]]) -> list[Accepted]:
    """Accept many send requests at once: all or none.

    One query finds earlier idempotency keys, each new item is planned, and all rows are written
    in one statement (the per-request costs of a single send are paid once per batch).

    Args:
        items: ``(payload, idempotency_key)`` pairs, as for :func:`submit`.
    Returns:
        One Accepted per item, in order (replays of earlier keys included).
    Raises:
        BatchRejected: one or more items are invalid (duplicate key in the batch, key reused with
            another body, unknown recipient, ...); nothing is written or queued.
    """
    for _ in range(2):  # a second pass only after losing an idempotency-key race
        earlier = store.idempotent_responses(app_id, [key for _, key in items if key])
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
                digest = request_hash(payload)
                replayed = _replay(earlier.get(key) if key else None, digest)
                if replayed:
                    results.append(replayed)
                    continue
                planned.append(plan(app_id, api_key_id, payload, key, digest))
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


"""Broadcasts: one template sent to a segment of an app's recipients (issue 14).

:func:`create` validates the request, renders the template once per template locale the segment
needs (and per A/B variant), and writes the broadcast ``running``; after commit it queues the
first fan-out task (notify.tasks.fan_out_broadcast, maintenance queue). Each task runs
:func:`fan_out`: one transaction writes the next ``NOTIFY_BROADCAST_BATCH`` recipients'
notifications and deliveries set-based (notify.store.fan_out_batch) and advances the cursor and
counters; a task goes on with the next batch for up to a few seconds, then queues the next
task. A crash commits a batch with its cursor or neither; a task
run twice finds the cursor moved (and the idempotency keys ``broadcast:<id>:<recipient>`` taken),
so no recipient is lost or doubled. A task lost with its worker is started again by the
dispatcher (:func:`restart_stalled`).

Deliveries go through the outbox as any send's do, so preferences, mutes, quiet hours and rate
limits apply per recipient at send time (notify.policy.at_send); an explicit opt-out or a mute
known at fan-out is written ``suppressed`` straight away.

Per-recipient variables: none. The content is rendered with the broadcast's ``data`` only;
``recipient.locale`` is the template locale used, ``recipient.name``, ``.external_id`` and
``.timezone`` are empty. A message that must differ per recipient is a bulk send
(``POST /api/v1/notifications/bulk``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from channels import registry
from channels.base import AddressKind

from . import cache, policy, store
from .accept import check_content
from .errors import SendRejected
from .models import FINAL_STATUSES, REACHED_PROVIDER, Broadcast, BroadcastStatus, DeliveryStatus
from .rendering import MissingVariables, RenderError, render_parts, select_locale


def _channels(requested: list[str] | None) -> list[tuple[str, str, str, str]]:
    """``(channel, address kind, platform, content group)`` of the requested channels (all
    enabled ones when None), for notify.store.fan_out_batch."""
    rows = []
    for channel in requested or registry.channels():
        cls = registry.channel_class(channel)
        kind = {AddressKind.PHONE: "phone", AddressKind.EMAIL: "email"}.get(cls.address_kind, "device")
        rows.append((channel, kind, cls.platform or "" if kind == "device" else "", cls.content_group))
    return rows


def _render(template: dict, locales: list[str], data: dict, channels: list[tuple[str, str, str, str]]) -> dict:
    """The broadcast's ``content``: ``{"locales": {recipient locale: template locale},
    "default_locale", "experiment", "variants": [{"name", "weight"}], "parts": {"<variant>|<template
    locale>": rendered groups}}`` (variant ``""`` without variants).

    Raises:
        SendRejected: missing variables (400), a template error or content a provider would refuse (422).
    """
    groups = tuple(dict.fromkeys(c[3] for c in channels))
    sources = [(v["name"], v["content"]) for v in template["variants"]] or [("", template["content"])]
    mapping = {}
    parts = {}
    truncate = bool(template["truncate_push"])
    for name, source in sources:
        chosen = {locale: select_locale(source, locale, template["default_locale"]) for locale in locales}
        default = select_locale(source, None, template["default_locale"])
        if not name:
            mapping = chosen
        for tlocale in set(chosen.values()) | {default}:
            profile = {"external_id": "", "name": "", "locale": tlocale, "timezone": ""}
            try:
                rendered = render_parts(source[tlocale], groups, data, profile)
            except MissingVariables as exc:
                raise SendRejected("missing_variables", str(exc), status=400,
                                   fields={"data": [f"missing: {n}" for n in exc.names]}) from None
            except RenderError as exc:
                raise SendRejected("template_error", str(exc), status=422, fields={"template": [str(exc)]}) from None
            checked: dict[str, dict] = {}
            for channel, _, _, group in channels:
                if group in rendered:
                    check_content(channel, group, rendered, checked, truncate)
            parts[f"{name}|{tlocale}"] = rendered
    if template["variants"]:
        # Locales are chosen from the first variant's; a variant lacking one falls to its default.
        first = template["variants"][0]["content"]
        mapping = {locale: select_locale(first, locale, template["default_locale"]) for locale in locales}
    return {"locales": mapping, "default_locale": select_locale(sources[0][1], None, template["default_locale"]),
            "experiment": f"{template['id']}:{template['version']}",
            "variants": [{"name": v["name"], "weight": int(v["weight"])} for v in template["variants"]],
            "parts": parts}


def create(app_id: int, payload: dict) -> Broadcast:
    """Validate and write a broadcast, and queue its first fan-out task after commit.

    ``payload``: ``{"template", "template_version"?, "data"?, "category"?, "priority"?,
    "channels"?, "ttl"?, "segment"}`` as notify.api.serializers.BroadcastIn validated it.

    Raises:
        SendRejected: ``template_not_found`` / ``template_version_not_found`` (404),
            ``empty_segment`` (422: no recipient matches), ``missing_variables`` (400),
            ``template_error`` or a provider's content refusal (422). Nothing is written then.
    """
    template = cache.load_template(app_id, payload["template"], payload.get("template_version"))
    if template is None or template["archived"]:
        raise SendRejected("template_not_found", f"no template named {payload['template']!r}", status=404,
                           fields={"template": ["not found"]})
    if template["version"] is None:
        raise SendRejected("template_version_not_found", "no such published version of this template", status=404,
                           fields={"template_version": ["not a published version"]})
    segment = payload["segment"]
    counts = store.segment_locales(app_id, segment)
    if not counts:
        raise SendRejected("empty_segment", "no recipient matches the segment", status=422,
                           fields={"segment": ["matches no recipient"]})
    channels = _channels(payload.get("channels"))
    data = payload.get("data") or {}
    content = _render(template, sorted(counts), data, channels)
    broadcast = Broadcast.objects.create(
        app_id=app_id, template_id=template["id"], template_version=template["version"], data=data,
        content=content, category=payload.get("category") or template["category"] or "general",
        priority=payload.get("priority") or "normal", channels=[c[0] for c in channels],
        ttl=payload.get("ttl") or settings.NOTIFY_DEFAULT_TTL, segment=segment, status=BroadcastStatus.RUNNING,
        total=sum(counts.values()))
    transaction.on_commit(lambda: kick(broadcast.id))
    return broadcast


def kick(broadcast_id: int) -> None:
    """Queue a fan-out task for ``broadcast_id`` (maintenance queue)."""
    from .tasks import fan_out_broadcast

    fan_out_broadcast.delay(broadcast_id)


#: Seconds one fan-out task keeps writing batches (each its own transaction) before it hands
#: over to the next task: fewer task hops per broadcast, while a worker's shutdown or another
#: broadcast waits no longer than this.
TASK_SECONDS = 5.0


def fan_out(broadcast_id: int, limit: int | None = None, chain: bool = True) -> tuple[int, str]:
    """Write the next batch of ``broadcast_id`` (``limit``, default ``NOTIFY_BROADCAST_BATCH``
    recipients) in one transaction; returns ``(recipients taken, status after)``. With ``chain``,
    queues the next task after commit while the broadcast is still ``running``."""
    limit = limit or settings.NOTIFY_BROADCAST_BATCH
    broadcast = Broadcast.objects.filter(pk=broadcast_id).first()
    if broadcast is None:
        return 0, ""
    rules = policy.rules(cache.load_categories(broadcast.app_id)["categories"].get(broadcast.category),
                         broadcast.category)
    channels = _channels(broadcast.channels)
    with transaction.atomic():
        taken, status = store.fan_out_batch(broadcast, channels, rules.required, limit)
        if chain and status == BroadcastStatus.RUNNING:
            transaction.on_commit(lambda: kick(broadcast_id))
    return taken, status


def run(broadcast_id: int, seconds: float = TASK_SECONDS) -> int:
    """A fan-out task's work: batches of ``broadcast_id`` (:func:`fan_out`) for up to ``seconds``,
    then the next task queued if it is still ``running``; returns the recipients taken."""
    deadline = time.monotonic() + seconds
    total = 0
    while True:
        taken, status = fan_out(broadcast_id, chain=False)
        total += taken
        if status != BroadcastStatus.RUNNING:
            return total
        if time.monotonic() >= deadline:
            kick(broadcast_id)
            return total


def restart_stalled() -> list[int]:
    """Queue a fan-out task for every running broadcast without a batch committed for
    ``NOTIFY_BROADCAST_STALL_AFTER`` seconds (its task was lost); returns their ids. Run by the
    dispatcher (notify.maintenance.dispatch_due)."""
    ids = store.stalled_broadcasts(settings.NOTIFY_BROADCAST_STALL_AFTER)
    for broadcast_id in ids:
        kick(broadcast_id)
    return ids


def cancel(app_id: int, broadcast_id: int) -> int | None:
    """Stop a broadcast's fan-out and cancel the deliveries it wrote that no worker has started
    (notify.store.cancel_broadcast); returns how many, None when not cancellable."""
    return store.cancel_broadcast(app_id, broadcast_id)


#: Delivery statuses counted as ``failed`` in a broadcast's progress.
FAILED = (DeliveryStatus.FAILED, DeliveryStatus.EXPIRED, DeliveryStatus.DEAD_LETTERED)


@dataclass(frozen=True)
class Progress:
    """A broadcast's progress. Recipients: ``total`` (the segment's size at creation),
    ``written`` (notifications written). Deliveries: ``queued`` (put in the outbox at fan-out),
    ``sent`` (reached the provider, receipts included), ``failed`` (failed, expired, dead
    lettered), ``suppressed`` (at fan-out or at send), ``cancelled``, ``pending`` (not final yet)."""

    total: int
    written: int
    queued: int
    sent: int
    failed: int
    suppressed: int
    cancelled: int
    pending: int
    status: str


def progress(broadcast: Broadcast) -> Progress:
    """The progress of ``broadcast``: counters from its row, delivery outcomes by one GROUP BY."""
    counts = store.broadcast_statuses(broadcast.id)
    return Progress(
        total=broadcast.total, written=broadcast.written, queued=broadcast.queued,
        sent=sum(n for s, n in counts.items() if s in REACHED_PROVIDER),
        failed=sum(counts.get(s, 0) for s in FAILED),
        suppressed=counts.get(DeliveryStatus.SUPPRESSED, 0), cancelled=counts.get(DeliveryStatus.CANCELLED, 0),
        pending=sum(n for s, n in counts.items() if s not in FINAL_STATUSES), status=broadcast.status)

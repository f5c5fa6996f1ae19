"""Broadcasts: one template sent to a segment of an app's recipients (issue 14).

:func:`create` validates the request, renders the template once per template locale the segment
needs (and per A/B variant), and writes the broadcast ``running``; after commit it queues the
first fan-out task (notify.tasks.fan_out_broadcast, maintenance queue). Each task runs
:func:`fan_out`: the next ``NOTIFY_BROADCAST_BATCH`` recipients' notifications and deliveries
written set-based, split into ``NOTIFY_BROADCAST_LANES`` id ranges written at once, each in its
own transaction on its own connection (so the database uses a core per lane), the cursor moved
over the batch once every lane has committed (:func:`_fan_out_in_lanes`); a small batch is one
transaction that writes its rows and moves the cursor (notify.store.fan_out_batch). A task goes
on with the next batch for up to a few seconds, then queues the next task. The cursor never
passes an uncommitted row, and the idempotency keys ``broadcast:<id>:<recipient>`` skip a
recipient already written (a lane committed before a crash, a task run twice), so no recipient
is lost or doubled. A task lost with its worker is started again by the dispatcher
(:func:`restart_stalled`). On a quiet 2-core test machine this writes 20,000–21,700
recipients/s (three deliveries each) with the relay publishing beside it, less on a busier one
(bench/broadcast.py; docs/scaling.md).

Deliveries go through the outbox as any send's do, each batch's as one row per channel
(notify.models.OutboxBatch), so preferences, mutes, quiet hours and rate limits apply per
recipient at send time (notify.policy.at_send); an explicit opt-out or a mute known at fan-out
is written ``suppressed`` straight away.

Per-recipient variables: none. The content is rendered with the broadcast's ``data`` only;
``recipient.locale`` is the template locale used, ``recipient.name``, ``.external_id`` and
``.timezone`` are empty. A message that must differ per recipient is a bulk send
(``POST /api/v1/notifications/bulk``).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django import db
from django.conf import settings
from django.db import IntegrityError, transaction

from channels import registry
from channels.base import AddressKind

from . import cache, policy, store
from .accept import check_content, request_hash, require_same_request, require_template
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


def create(app_id: int, payload: dict, idempotency_key: str | None = None) -> tuple[Broadcast, bool]:
    """Validate and write a broadcast, and queue its first fan-out task after commit; in the
    caller's transaction.

    ``payload``: ``{"template", "template_version"?, "data"?, "category"?, "priority"?,
    "channels"?, "ttl"?, "segment"}`` as notify.api.serializers.BroadcastIn validated it.
    ``idempotency_key``: the request's ``Idempotency-Key``; the app's broadcast created with it
    and the same body is answered instead of a new one, even if the request would now be
    refused (as a send's replay is: notify.accept.submit), also when a concurrent twin commits
    first.

    Returns:
        ``(broadcast, replayed)``: ``replayed`` when it is the earlier broadcast of the key.
    Raises:
        SendRejected: ``template_not_found`` / ``template_version_not_found`` (404),
            ``empty_segment`` (422: no recipient matches), ``missing_variables`` (400),
            ``template_error`` or a provider's content refusal (422), ``idempotency_key_reused``
            (409: the key's broadcast had another body). Nothing is written then.
    """
    digest = request_hash(payload) if idempotency_key else ""
    earlier = _earlier(app_id, idempotency_key, digest)
    if earlier is not None:
        return earlier, True
    template = require_template(cache.load_template(app_id, payload["template"], payload.get("template_version")),
                                payload["template"])
    segment = payload["segment"]
    counts = store.segment_locales(app_id, segment)
    if not counts:
        raise SendRejected("empty_segment", "no recipient matches the segment", status=422,
                           fields={"segment": ["matches no recipient"]})
    channels = _channels(payload.get("channels"))
    data = payload.get("data") or {}
    content = _render(template, sorted(counts), data, channels)
    try:
        with transaction.atomic():  # a savepoint: a concurrent twin's committed key refuses the insert
            broadcast = Broadcast.objects.create(
                app_id=app_id, template_id=template["id"], template_version=template["version"], data=data,
                content=content, category=payload.get("category") or template["category"] or "general",
                priority=payload.get("priority") or "normal", channels=[c[0] for c in channels],
                ttl=payload.get("ttl") or settings.NOTIFY_DEFAULT_TTL, segment=segment,
                status=BroadcastStatus.RUNNING, total=sum(counts.values()),
                idempotency_key=idempotency_key, request_hash=digest)
    except IntegrityError:
        earlier = _earlier(app_id, idempotency_key, digest)
        if earlier is None:
            raise
        return earlier, True
    transaction.on_commit(lambda: kick(broadcast.id))
    return broadcast, False


def _earlier(app_id: int, idempotency_key: str | None, digest: str) -> Broadcast | None:
    """The app's broadcast created with ``idempotency_key``, None when none (or no key).

    Raises:
        SendRejected: 409 ``idempotency_key_reused`` when that request had another body.
    """
    if not idempotency_key:
        return None
    earlier = Broadcast.objects.filter(app_id=app_id, idempotency_key=idempotency_key).first()
    if earlier is not None:
        require_same_request(earlier.request_hash, digest)
    return earlier


def kick(broadcast_id: int) -> None:
    """Queue a fan-out task for ``broadcast_id`` (maintenance queue)."""
    from .tasks import fan_out_broadcast

    fan_out_broadcast.delay(broadcast_id)


#: Seconds one fan-out task keeps writing batches (each its own transaction) before it hands
#: over to the next task: fewer task hops per broadcast, while a worker's shutdown or another
#: broadcast waits no longer than this.
TASK_SECONDS = 5.0


#: Fewest recipients a lane of a batch is worth: below that, a batch runs as one transaction.
LANE_MIN = 1000


def fan_out(broadcast_id: int, limit: int | None = None, chain: bool = True,
            lanes: int | None = None) -> tuple[int, str]:
    """Write the next batch of ``broadcast_id`` (``limit``, default ``NOTIFY_BROADCAST_BATCH``
    recipients); returns ``(recipients taken, status after)``. With ``chain``, queues the next
    task after commit while the broadcast is still ``running``.

    A batch of at least ``lanes`` (default ``NOTIFY_BROADCAST_LANES``) × :data:`LANE_MIN`
    recipients is split into that many id ranges written at once, each in its own transaction
    on its own connection (:func:`_fan_out_in_lanes`); a smaller one is one transaction
    (notify.store.fan_out_batch)."""
    limit = limit or settings.NOTIFY_BROADCAST_BATCH
    lanes = lanes or settings.NOTIFY_BROADCAST_LANES
    broadcast = Broadcast.objects.filter(pk=broadcast_id).first()
    if broadcast is None:
        return 0, ""
    rules = policy.rules(cache.load_categories(broadcast.app_id)["categories"].get(broadcast.category),
                         broadcast.category)
    channels = _channels(broadcast.channels)
    if lanes > 1 and limit >= lanes * LANE_MIN:
        taken, status = _fan_out_in_lanes(broadcast, channels, rules.required, limit, lanes)
    else:
        with transaction.atomic():
            taken, status = store.fan_out_batch(broadcast, channels, rules.required, limit)
    if chain and status == BroadcastStatus.RUNNING:
        transaction.on_commit(lambda: kick(broadcast_id))
    return taken, status


class _Stopped(Exception):
    """A lane found its broadcast no longer running: its transaction is rolled back."""


#: The threads writing the upper lanes, each keeping its own database connection between batches.
_lane_threads: ThreadPoolExecutor | None = None


def _upper_lane(broadcast: Broadcast, channels, required: bool, after: int, upto: int) -> None:
    """An upper lane of a batch, in this thread's own transaction (committed on return)."""
    db.close_old_connections()  # a connection broken since the last batch is opened again
    with transaction.atomic():
        if store.fan_out_lane(broadcast, channels, required, after, upto, first=False) is None:
            raise _Stopped


def stop_lanes() -> None:
    """Close the lane threads' database connections and end the threads (a test database can
    then be dropped); the next batch in lanes starts them again."""
    global _lane_threads
    pool, _lane_threads = _lane_threads, None
    if pool is None:
        return
    together = threading.Barrier(pool._max_workers)

    def close() -> None:
        together.wait(timeout=10)  # one call on each thread
        db.connections.close_all()

    futures.wait([pool.submit(close) for _ in range(pool._max_workers)])
    pool.shutdown(wait=True)


def _fan_out_in_lanes(broadcast: Broadcast, channels, required: bool, limit: int, lanes: int) -> tuple[int, str]:
    """One batch of ``limit`` recipients in ``lanes`` id ranges written at once (the database
    does each lane's inserts, index entries and foreign-key checks on its own core).

    The first lane's transaction, in this thread, takes the broadcast's batch lock (two tasks of
    one broadcast never write batches at once), reads where the lanes end, hands the upper lanes
    to threads and writes the first. Each upper lane commits its rows and adds its counts to the
    counters by itself; the first lane waits for them before it adds its own and moves the
    cursor over the whole batch, then commits. So the cursor passes only rows that are
    committed. A crash in between leaves some upper lanes' rows above the cursor, counted: the
    next batch takes those recipients again and their idempotency keys skip them (nothing
    doubled, nothing counted twice). A lane that finds the broadcast cancelled rolls back, and
    so does the first lane then; a lane that fails fails the batch the same way (the dispatcher
    starts the fan-out again)."""
    global _lane_threads
    if _lane_threads is None or _lane_threads._max_workers < lanes - 1:
        # Created in the worker process itself (a prefork child), never inherited across a fork.
        stop_lanes()
        _lane_threads = ThreadPoolExecutor(max_workers=lanes - 1, thread_name_prefix="fan-out-lane")
    with transaction.atomic():
        status, position, taken, bounds = store.fan_out_lanes(broadcast.id, limit, lanes, broadcast.app_id,
                                                              broadcast.segment)
        if status != BroadcastStatus.RUNNING:
            return 0, status
        starts = [position, *bounds]
        upper = [_lane_threads.submit(_upper_lane, broadcast, channels, required, starts[i], starts[i + 1])
                 for i in range(1, len(bounds))]
        try:
            counts = store.fan_out_lane(broadcast, channels, required, position, starts[1], first=True) \
                if bounds else (0, 0, 0)
        finally:
            futures.wait(upper)  # never leave a lane running behind a failed first lane
        stopped = any(isinstance(future.exception(), _Stopped) for future in upper)
        for future in upper:
            if future.exception() is not None and not stopped:
                raise future.exception()
        after = None if stopped else store.close_lanes(broadcast.id, counts, position, starts[-1], taken < limit)
        if after is None:
            transaction.set_rollback(True)
    if after is None:  # no longer running: nothing of this batch stays
        return 0, Broadcast.objects.filter(pk=broadcast.id).values_list("status", flat=True).first() or ""
    return taken, after


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

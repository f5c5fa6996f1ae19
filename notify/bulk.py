"""Bulk send: one template to up to ``NOTIFY_BULK_MAX_RECIPIENTS`` recipients in one call, each
with its own data and idempotency key (``POST /api/v1/notifications/bulk``).

Unlike the batch endpoint (up to 500 independent sends, each loading its own context), a bulk
call shares everything but the recipient, its data and its key, so its cost does not grow in
round trips with its size: one Redis MGET and at most four queries load every recipient's
profile (notify.cache.load_bulk_send_context), one query finds earlier idempotency keys, each
item is planned in memory by notify.accept.plan (the single send's rules), and one statement
writes every notification and delivery and wakes the relay once (notify.store.insert_notifications).

That insert rather than COPY: COPY writes 10,000 notifications and 40,000 deliveries in
0.57–0.62 s where the insert takes 1.41 s (bench/bulk.py --compare-copy, quiet machine; 1.09 s
when the insert bound typed arrays, before it bound JSON for the single send's sake), but a
call takes 5.2–5.8 s (rendering and checking each item dominate), and COPY would need a
transaction, separate statements for the parked rows' log and the relay's wake-up, and a
second copy of the insert's column rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import IntegrityError
from django.utils import timezone

from . import accept, cache, store
from .errors import SendRejected

REJECT_ALL = "reject_all"
SKIP = "skip"
ON_INVALID = (REJECT_ALL, SKIP)

#: Refusals that hold for every item alike (the shared template): the whole call is refused
#: with that error instead of one error per item.
_WHOLE_CALL = frozenset({"template_not_found", "template_version_not_found"})


@dataclass
class BulkItem:
    """One recipient of a bulk call: ``payload`` the single send it stands for (the shared
    fields plus ``recipient`` and ``data``), ``key`` its ``event_id``."""

    index: int
    payload: dict
    key: str | None


@dataclass
class BulkResult:
    """``accepted``: ``{"index", "id", "event_id", "replayed"}`` per accepted item, in order;
    ``refused``: index → ``{"code", "message", "fields"}``."""

    accepted: list[dict] = field(default_factory=list)
    refused: dict[int, dict] = field(default_factory=dict)


class BulkRejected(SendRejected):
    """Items of a bulk call are refused and nothing was written; ``items``: index → error."""

    def __init__(self, items: dict[int, dict], total: int):
        super().__init__("bulk_rejected", f"{len(items)} of {total} recipient(s) are refused; nothing was sent",
                         status=400)
        self.items = items


def error_of(exc: SendRejected) -> dict:
    """An item's refusal as it is answered: ``{"code", "message", "fields"}``."""
    return {"code": exc.code, "message": str(exc), "fields": exc.fields}


def submit_bulk(app_id: int, api_key_id: str | None, items: list[BulkItem], on_invalid: str,
                refused: dict[int, dict] | None = None) -> BulkResult:
    """Accept a bulk call.

    Args:
        items: the items that passed the request's shape checks (notify.api.serializers).
        on_invalid: ``reject_all`` (any refused item refuses the call, nothing is written) or
            ``skip`` (the valid items are accepted).
        refused: index → error of the items the shape checks refused already.
    Returns:
        BulkResult; a replayed ``event_id`` (same item as before) answers its earlier notification.
    Raises:
        BulkRejected: ``reject_all`` with a refused item, or no item accepted at all.
        SendRejected: the shared template does not exist (404, as for a single send), or
            ``conflict`` (409) when the call's keys are being used concurrently.
    """
    refused = dict(refused or {})
    total = len(items) + len(refused)
    if not items:
        raise BulkRejected(refused, total)
    shared = items[0].payload
    context = cache.load_bulk_send_context(app_id, [item.payload["recipient"] for item in items],
                                           shared.get("template"), shared.get("template_version"))
    now = timezone.now()
    configs: dict[str, dict] = {}  # each channel's content config, read once for the call
    for _ in range(2):  # a second pass only after losing an idempotency-key race
        earlier = store.idempotent_responses(app_id, [item.key for item in items if item.key])
        result = BulkResult(refused=dict(refused))
        planned: list[accept.Planned] = []
        seen: set[str] = set()
        for item in items:
            try:
                if item.key:
                    if item.key in seen:
                        raise SendRejected("duplicate_idempotency_key", "the same event_id twice in one call",
                                           fields={"event_id": ["used by an earlier item of this call"]})
                    seen.add(item.key)
                digest = accept.request_hash(item.payload)
                replayed = accept._replay(earlier.get(item.key) if item.key else None, digest)
                if replayed:
                    result.accepted.append({"index": item.index, "id": replayed.body["id"], "event_id": item.key,
                                            "replayed": True})
                    continue
                one = cache.SendContext(context.profiles.get(item.payload["recipient"]), context.template,
                                        context.categories)
                planned.append(accept.plan(app_id, api_key_id, item.payload, item.key, digest, now, one, configs))
                result.accepted.append({"index": item.index, "id": planned[-1].body["id"], "event_id": item.key,
                                        "replayed": False})
            except SendRejected as exc:
                if exc.code in _WHOLE_CALL:
                    raise
                result.refused[item.index] = error_of(exc)
        if result.refused and (on_invalid == REJECT_ALL or not result.accepted):
            raise BulkRejected(dict(sorted(result.refused.items())), total)
        try:
            if planned:
                accept.write(planned)
        except IntegrityError:
            continue
        result.refused = dict(sorted(result.refused.items()))
        return result
    raise SendRejected("conflict", "event_ids of this call are being used concurrently; retry", status=409)

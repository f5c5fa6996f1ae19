"""Maintenance: the dispatcher and retention, run by Celery beat on the maintenance queue.

The dispatcher (:func:`dispatch_due`, every second) puts back into the outbox what is due and
not on a queue, and is the outbox relay's backstop. Retention (:func:`forget_idempotency_keys`,
hourly) releases idempotency keys past ``NOTIFY_IDEMPOTENCY_RETENTION`` and
(:func:`forget_expired_tokens`, hourly) deletes expired OAuth2 access tokens;
(:func:`maintain_history`, hourly) creates the day partitions of deliveries and their log ahead
and drops those past ``NOTIFY_HISTORY_RETENTION_DAYS`` (notify.partitions). The analytics rollup
(:func:`rollup_analytics`, every ``NOTIFY_ANALYTICS_INTERVAL`` seconds) counts what was recorded
since its last run.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import analytics, breaker, broadcast, outbox, partitions, providers, store

log = logging.getLogger(__name__)


def dispatch_due(batch: int = 1000, now: dt.datetime | None = None) -> int:
    """Put every delivery that is due and not on a queue back into the outbox, and publish what
    the relay has left there; returns how many rows it moved or published.

    ``now`` (aware) is the instant "due" is read at; None (beat's call) is the database's clock.
    A test steps it across a daylight-saving change to see each scheduled delivery released once,
    at its instant.

    - ``retrying`` whose ``next_attempt_at`` passed → ``queued``, unless every provider of the
      channel is tripped (notify.providers.held_channels): then one per call while a breaker is
      half-open (the probe), and the rest once a probe succeeded;
    - ``scheduled`` (a ``send_at``, quiet hours) whose ``next_attempt_at`` passed → ``queued``;
    - ``sending`` whose lease ran out (the worker died mid-send) → ``queued`` with
      ``unknown_outcome`` set, so the worker applies the channel's unknown-outcome policy;
    - ``queued`` published more than ``NOTIFY_REPUBLISH_STALE_AFTER`` seconds ago and never
      claimed (the broker lost the message) → unpublished;
    - ``queued`` and unpublished for ``NOTIFY_REPUBLISH_AFTER`` seconds (no relay running, or
      the broker was down) → published here;
    - a ``running`` broadcast without progress for ``NOTIFY_BROADCAST_STALL_AFTER`` seconds →
      its fan-out task queued again (notify.broadcast.restart_stalled).

    Safe to run in several processes at once (``FOR UPDATE SKIP LOCKED``).
    """
    moved = 0
    with transaction.atomic():
        held = providers.held_channels(settings.NOTIFY_CHANNELS)
        moved += store.move_due(held, batch, now)
        for channel in held:
            if any(breaker.state(p) == breaker.HALF_OPEN for p in settings.NOTIFY_CHANNEL_PROVIDERS[channel]):
                moved += store.move_probe(channel, now)
        moved += store.unpublish_stale(settings.NOTIFY_REPUBLISH_STALE_AFTER, batch)
    if moved:
        log.info("moved %d due deliveries to the outbox", moved)
    restarted = broadcast.restart_stalled()
    if restarted:
        log.warning("restarted the fan-out of stalled broadcasts %s", restarted)
    try:
        published = outbox.relay_once(batch, older_than=settings.NOTIFY_REPUBLISH_AFTER)
    except Exception:  # noqa: BLE001 - broker down: the rows wait in the outbox
        log.exception("publishing the outbox's backlog failed; retrying in the next round")
        published = 0
    if published:
        log.warning("published %d deliveries no relay had taken (is `manage.py relay` running?)", published)
    return moved + published


def forget_idempotency_keys() -> int:
    """Release idempotency keys older than ``NOTIFY_IDEMPOTENCY_RETENTION``; returns the count."""
    from .models import Notification

    cutoff = timezone.now() - dt.timedelta(seconds=settings.NOTIFY_IDEMPOTENCY_RETENTION)
    return Notification.objects.filter(idempotency_key__isnull=False, created_at__lt=cutoff).update(idempotency_key=None)


def forget_expired_tokens() -> int:
    """Delete the OAuth2 access tokens that have expired (notify.oauth; a client takes a new one
    every NOTIFY_OAUTH_TOKEN_SECONDS, so they would pile up); returns the count."""
    from oauth2_provider.models import AccessToken

    return AccessToken.objects.filter(expires__lt=timezone.now()).delete()[0]


def rollup_analytics() -> int:
    """Count into the analytics what was recorded since the last rollup (notify.analytics.rollup,
    with ``NOTIFY_ANALYTICS_LAG``); returns how many rows it counted."""
    return analytics.rollup().rows


def maintain_history(day: dt.date | None = None) -> int:
    """Create the day partitions of deliveries and their log ``NOTIFY_HISTORY_PARTITIONS_AHEAD``
    days ahead and drop those older than ``NOTIFY_HISTORY_RETENTION_DAYS`` (never one holding an
    unfinished delivery), with their deliveries' events and the notifications left without a
    delivery (notify.partitions.maintain); returns how many partitions it created or dropped.

    ``day`` stands for today (UTC); None is the database's.
    """
    done = partitions.maintain(ahead=settings.NOTIFY_HISTORY_PARTITIONS_AHEAD,
                               retention_days=settings.NOTIFY_HISTORY_RETENTION_DAYS, day=day)
    if done.created or done.dropped:
        log.info("history partitions: created %s, dropped %s (%d events, %d notifications deleted)",
                 done.created, done.dropped, done.events, done.notifications)
    if done.kept:
        log.warning("history partitions past retention kept for unfinished deliveries: %s", done.kept)
    return len(done.created) + len(done.dropped)

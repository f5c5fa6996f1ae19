"""Analytics per template, version, A/B variant, channel and day: the counts the rollup keeps
(:func:`rollup`, into notify_dailystat) and what is read from them (:func:`report`: counts per
group and the rates computed from them at read time).

The counts are incremental: every ``NOTIFY_ANALYTICS_INTERVAL`` seconds the maintenance worker
runs :func:`rollup`, which reads only the delivery-log rows, delivery events and notifications
stamped since its watermark (notify.store.rollup_analytics says why that is exact). Reads never
touch the delivery tables. A day is the UTC day a notification was accepted: everything that
happens to its deliveries later (sent, opened days after) counts on that day, so each day's
rates are those of the sends of that day.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, Iterable, Sequence

from django.conf import settings

from . import store
from .models import EVENT_METRICS, AnalyticsWatermark, Metric
from .models.analytics import BEGINNING

log = logging.getLogger(__name__)

#: The watermark row of the daily rollup.
ROLLUP = "daily"
#: Every metric, in the order reports list them.
METRICS: tuple[str, ...] = tuple(Metric.values)
#: Seconds a transaction may hold the rollup back before it says so in the log (an idle session
#: left in a transaction delays the analytics for as long as it stays open).
HOLD_WARNING = 600
#: What a report can be grouped by, in the order its columns come.
GROUPS = ("day", "template", "version", "variant", "channel")
#: rate → (numerator, denominator), each a metric; a rate is None when its denominator is 0.
#: ``click_rate`` is the click-through rate (of what was sent); ``click_to_open_rate`` of what
#: was opened.
RATES: dict[str, tuple[str, str]] = {
    "sent_rate": ("sent", "accepted"),
    "failure_rate": ("failed", "accepted"),
    "delivery_rate": ("delivered", "sent"),
    "bounce_rate": ("bounced", "sent"),
    "complaint_rate": ("complained", "sent"),
    "open_rate": ("opened", "sent"),
    "click_rate": ("clicked", "sent"),
    "click_to_open_rate": ("clicked", "opened"),
    "unsubscribe_rate": ("unsubscribed", "sent"),
}


def rollup(lag: float | None = None) -> store.Rollup:
    """Count what was recorded since the last rollup (see the module docstring); exactly once,
    safe to run concurrently (the second waits, then counts what is left).

    Args:
        lag: seconds a row must be old to be counted; None: ``NOTIFY_ANALYTICS_LAG``. Tests
            pass 0.
    Returns:
        What it counted (notify.store.Rollup).
    """
    done = store.rollup_analytics(ROLLUP, settings.NOTIFY_ANALYTICS_LAG if lag is None else lag, EVENT_METRICS,
                                  BEGINNING)
    if done.held_since is not None and _age(done.held_since) > HOLD_WARNING:
        log.warning("analytics held back by a transaction open since %s (pg_stat_activity.xact_start): "
                    "what was recorded after it is counted once it ends", done.held_since.isoformat())
    log.info("analytics rolled up", extra={"since": done.since.isoformat(), "upto": done.upto.isoformat(),
                                           "rows": done.rows, "counts": done.counts})
    return done


def _age(instant: datetime.datetime) -> float:
    return (datetime.datetime.now(datetime.timezone.utc) - instant).total_seconds()


def rolled_up_to() -> datetime.datetime | None:
    """The instant the counts are complete up to (the watermark), None before the first rollup."""
    row = AnalyticsWatermark.objects.filter(name=ROLLUP).values_list("upto", flat=True).first()
    return None if row is None or row == BEGINNING else row


def rates(counts: dict[str, int]) -> dict[str, float | None]:
    """The :data:`RATES` of one group's counts (metric → count), each a fraction in [0, 1] (it
    can exceed 1 only where providers report more than was sent, e.g. opens without a
    delivery receipt do not), rounded to 6 places; None when the denominator is 0."""
    out: dict[str, float | None] = {}
    for name, (numerator, denominator) in RATES.items():
        base = counts.get(denominator, 0)
        out[name] = round(counts.get(numerator, 0) / base, 6) if base else None
    return out


@dataclasses.dataclass(frozen=True)
class Row:
    """One group of a report: ``key`` maps each grouped-by name (:data:`GROUPS`) to its value
    (``day``: a date; ``template``: a template id, 0 for sends without one; ``version``: an int,
    0 for none; ``variant``: a name, ``""`` for none; ``channel``); ``counts`` every metric of
    :data:`METRICS` (0 when none)."""

    key: dict[str, Any]
    counts: dict[str, int]

    @property
    def rates(self) -> dict[str, float | None]:
        return rates(self.counts)


def report(app_id: int, first_day: datetime.date, last_day: datetime.date, group_by: Sequence[str] = (), *,
           template_id: int | None = None, version: int | None = None, variant: str | None = None,
           channel: str | None = None) -> list[Row]:
    """The counts of app ``app_id`` on the UTC days [first_day, last_day], filtered and grouped,
    one :class:`Row` per group present, sorted by the group values. Without ``group_by``: one
    row, the totals (every metric 0 when there is nothing). Filters as in
    notify.store.analytics_counts.

    Raises:
        KeyError: a group not in :data:`GROUPS`.
    """
    group_by = tuple(group_by)
    for group in group_by:
        if group not in GROUPS:
            raise KeyError(group)
    rows: dict[tuple, dict[str, int]] = {}
    for *key, metric, count in store.analytics_counts(app_id, first_day, last_day, group_by, template_id=template_id,
                                                     version=version, variant=variant, channel=channel):
        rows.setdefault(tuple(key), dict.fromkeys(METRICS, 0))[metric] = count
    if not group_by and not rows:
        rows[()] = dict.fromkeys(METRICS, 0)
    return [Row(dict(zip(group_by, key)), counts) for key, counts in sorted(rows.items())]


def total(rows: Iterable[Row]) -> dict[str, int]:
    """Every metric summed over ``rows``."""
    out = dict.fromkeys(METRICS, 0)
    for row in rows:
        for metric, count in row.counts.items():
            out[metric] += count
    return out

"""What the recipient decides, applied when a send is accepted and again at the moment of
sending: preferences per channel and category with the category's defaults, the global mute,
quiet hours in the recipient's time zone, and per-recipient rate limits (notify.ratelimit).

The rules are pure functions of what the API's cached profile (notify.cache) or the worker's
claim statement (notify.store.claim) already holds, so neither side pays a round trip for them;
only the rate limit talks to Redis.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from channels import registry

#: ``"HH:MM-HH:MM"`` (24-hour clock, local time); the end may be before the start (overnight).
QUIET_HOURS_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
#: A category's or recipient's quiet hours that mean "never held", whatever the app's default.
NO_QUIET_HOURS = "none"

SEND = "send"
SUPPRESS = "suppress"
DEFER = "defer"


@dataclass(frozen=True)
class Rules:
    """The rules of one category (notify.models.Category); a category the app has not defined
    gets the defaults: not required, opted in everywhere, ``NOTIFY_RATE_LIMIT``, suppress over
    the limit, the app's quiet hours."""

    name: str
    required: bool = False
    defaults: dict = field(default_factory=dict)
    rate_limits: dict = field(default_factory=dict)
    over_limit: str = "suppress"
    quiet_hours: str = ""


def rules(row: dict | None, name: str) -> Rules:
    """The :class:`Rules` of category ``name`` from its row (a dict with the Category model's
    rule fields, as notify.cache.load_categories and the claim statement give it; None: the
    app has not defined it)."""
    if not row:
        return Rules(name)
    return Rules(name, bool(row.get("required")), row.get("defaults") or {}, row.get("rate_limits") or {},
                 row.get("over_limit") or "suppress", row.get("quiet_hours") or "")


def channel_default(rules_: Rules, channel: str) -> bool:
    """Whether a recipient who never chose gets ``channel`` for this category: the channel's own
    entry in ``defaults``, else its content group's, else True."""
    for key in (channel, registry.channel_class(channel).content_group):
        if key in rules_.defaults:
            return bool(rules_.defaults[key])
    return True


def opted_in(preference: bool | None, rules_: Rules, channel: str) -> bool:
    """The recipient's choice for ``channel`` in this category: a required category always;
    else their preference (``preference``: the category's own row over the channel-wide one,
    None without either); else the category's default."""
    if rules_.required:
        return True
    if preference is not None:
        return preference
    return channel_default(rules_, channel)


def preference_of(preferences: dict[str, bool], channel: str, category: str) -> bool | None:
    """The recipient's stored choice from a cached profile's ``preferences``
    (``{"<channel>|<category>": bool}``, ``""`` for every category), or None."""
    for key in (f"{channel}|{category}", f"{channel}|"):
        if key in preferences:
            return preferences[key]
    return None


def is_muted(muted: bool, muted_until: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether a global mute holds at ``now``: muted without an end, or until a later instant."""
    return bool(muted) and (muted_until is None or muted_until > now)


def parse_quiet_hours(value: str) -> tuple[dt.time, dt.time] | None:
    """``"22:00-08:00"`` → ``(22:00, 08:00)``; ``""``, ``"none"`` or an empty window → None.

    Raises:
        ValueError: any other text.
    """
    if not value or value == NO_QUIET_HOURS:
        return None
    # fullmatch: with match, "$" would also accept a trailing newline.
    match = QUIET_HOURS_RE.fullmatch(value)
    if not match:
        raise ValueError(f"quiet hours must be HH:MM-HH:MM or {NO_QUIET_HOURS!r}, not {value!r}")
    h1, m1, h2, m2 = map(int, match.groups())
    start, end = dt.time(h1, m1), dt.time(h2, m2)
    return None if start == end else (start, end)


def quiet_hours_of(recipient: str, category: str, app: str) -> str:
    """The quiet hours that apply: the recipient's own, else the category's, else the app's
    (each ``""`` when unset; ``"none"`` stops the search and means none)."""
    for value in (recipient, category, app):
        if value:
            return value
    return ""


def zone(name: str) -> dt.tzinfo:
    """The IANA time zone ``name``; UTC for an unknown one (the API validates names, so this only
    covers a zone dropped from the tz database since)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return dt.timezone.utc


def quiet_until(now: dt.datetime, timezone_name: str, window: str) -> dt.datetime | None:
    """When quiet hours that hold at ``now`` end, or None when they do not hold.

    Args:
        now: an aware instant.
        timezone_name: the recipient's IANA zone; the window is read on its wall clock.
        window: ``"HH:MM-HH:MM"`` (see :func:`parse_quiet_hours`).
    Returns:
        The first instant after ``now`` at which the recipient's wall clock reads the window's
        end, in UTC. Across a daylight-saving change: an end time the clock skips (spring
        forward) releases at the change itself; one the clock reads twice (fall back) releases
        at the first reading.
    """
    parsed = parse_quiet_hours(window)
    if parsed is None:
        return None
    start, end = parsed
    tz = zone(timezone_name)
    local = now.astimezone(tz)
    wall = local.time().replace(tzinfo=None)
    inside = start <= wall < end if start < end else (wall >= start or wall < end)
    if not inside:
        return None
    day = local.date() if wall < end else local.date() + dt.timedelta(days=1)
    target = dt.datetime.combine(day, end, tzinfo=tz)  # fold=0: the first of two readings
    release = target.astimezone(dt.timezone.utc)
    if release.astimezone(tz).replace(tzinfo=None) != target.replace(tzinfo=None):
        # The wall clock skips the end time: release when the clock jumps past it, the first
        # minute whose reading is at or after the end.
        probe = target.replace(fold=1).astimezone(dt.timezone.utc).replace(second=0, microsecond=0)
        while probe.astimezone(tz).replace(tzinfo=None) < target.replace(tzinfo=None):
            probe += dt.timedelta(minutes=1)
        release = probe
    return release if release > now else None


@dataclass(frozen=True)
class Decision:
    """What to do with a delivery now: ``send``, ``suppress`` (with ``reason``) or ``defer``
    until ``until`` (with ``reason``)."""

    action: str
    reason: str = ""
    until: dt.datetime | None = None


GO = Decision(SEND)


def at_send(c: Any, now: dt.datetime) -> Decision:
    """The recipient's decision for a claimed delivery (notify.send.Claim) at ``now``, checked
    right before the provider is called; rate limits are counted last, only for a delivery that
    would otherwise go.

    Order: a suppression of the address (notify.models.AddressSuppression: every category) →
    opt-out (category over channel-wide, then the category's default) → global mute →
    quiet hours (not for ``priority: high`` or a required category) → rate limit (not for a
    required category).
    """
    from . import ratelimit  # Redis, only when a delivery gets that far

    if c.address_suppressed:
        return Decision(SUPPRESS, c.address_suppressed)
    rules_ = rules(c.category_rules, c.category)
    if not opted_in(c.preference, rules_, c.channel):
        return Decision(SUPPRESS, "opted_out")
    if rules_.required:
        return GO
    if is_muted(c.muted, c.muted_until, now):
        return Decision(SUPPRESS, "muted")
    if c.priority != "high":
        until = quiet_until(now, c.timezone, quiet_hours_of(c.quiet_hours, rules_.quiet_hours, c.app_quiet_hours))
        if until is not None:
            return Decision(DEFER, "quiet_hours", until)
    return ratelimit.at_send(c, rules_, now)

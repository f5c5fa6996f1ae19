"""Per-recipient rate limits, counted at the moment of sending: the most deliveries one recipient
gets on one channel in one category over moving (sliding) windows, e.g. 3 pushes an hour and 10
a day.

Counting is the ``limits`` library's moving window on Redis (``MovingWindowRateLimiter``): a
hit is one Lua script that checks and records in one step, so worker processes on any number
of hosts never let more than the limit through. Nothing is counted when
a send is accepted: a refused request, or a delivery that is later suppressed, opted out,
muted or held by quiet hours, uses up nothing.

Which limits apply (:func:`limits_for`): the category's ``rate_limits``
(``{"<channel>" | "<content group>" | "*": "<limits>"}``; the channel's own entry wins over its
content group's, which wins over ``*``), else ``NOTIFY_RATE_LIMIT``. ``<limits>`` is the
``limits`` syntax, several windows separated by ``;`` (``"3/hour;10/day"``, ``"5/30 minutes"``),
or ``"none"`` for no limit.

What counts: a notification counts once per recipient, channel and category, on its first
attempt (:func:`at_send`). A provider retry (attempt 2 and later) is the same message and is not
counted again; nor is a second device of the same notification on the same channel, nor a
claim that comes back after the circuit breaker handed it back with its attempt refunded
(``circuit_open``): a marker per notification and channel, kept as long as the longest window,
says it was counted (two devices claimed at the same moment may both count: fewer sends, never
more). A delivery deferred by the rate limit itself was not counted and counts
when it comes back. Counting on the first attempt only also means that a worker dying between
its claim and the count leaves that delivery uncounted (the next claim is attempt 2): one
uncounted send after a crash, rather than a message counted twice.

The Redis key names the app, recipient, channel and category, and the limit itself (the
``limits`` library's key), so a changed limit starts from an empty window.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from typing import Any

from django.conf import settings
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from channels import registry

from .policy import DEFER, GO, SUPPRESS, Decision, Rules

# notify.cache (the models) is imported inside the functions that use it: the settings import
# this module for parse_limits while they load, before Django is set up.

#: A ``rate_limits`` entry (or ``NOTIFY_RATE_LIMIT``) that means "no limit".
NO_LIMIT = "none"
#: The ``rate_limits`` key that applies to every channel without its own or its group's entry.
EVERY_CHANNEL = "*"
#: The reason of a delivery suppressed or deferred by a rate limit.
REASON = "rate_limited"


@functools.lru_cache(maxsize=256)
def parse_limits(value: str) -> tuple[RateLimitItem, ...]:
    """``"3/hour;10/day"`` → the ``limits`` items (one per window); ``"none"`` → ``()``.

    Syntax: the ``limits`` library's (``<count>/<period>`` or ``<count> per <period>``, period
    ``second``, ``minute``, ``hour``, ``day``, ``month``, ``year`` with an optional multiple,
    ``5/30 minutes``; several separated by ``;``, ``,`` or ``|``).

    Raises:
        ValueError: any other text, or a window allowing fewer than one delivery (a channel is
            turned off with the category's ``defaults`` or an opt-out, not with a limit).
    """
    if not isinstance(value, str):
        raise ValueError(f"a rate limit is a string such as '3/hour;10/day' or {NO_LIMIT!r}, not {value!r}")
    if value.strip().lower() == NO_LIMIT:
        return ()
    try:
        items = tuple(parse_many(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit: write '<count>/<period>' (second, minute, hour, day), "
                         f"several separated by ';' ('3/hour;10/day'), or {NO_LIMIT!r}") from None
    if any(item.amount < 1 for item in items):
        raise ValueError(f"{value!r}: a rate limit allows at least 1 per window")
    return items


def validate_rate_limits(value: Any) -> dict:
    """Check a category's ``rate_limits`` before it is written; returns it unchanged.

    Args:
        value: ``{"<channel>" | "<content group>" | "*": "<limits>"}`` (see :func:`parse_limits`);
            channels and content groups are the enabled ones (channels.registry).
    Raises:
        ValueError: not an object, or the first entry :func:`check_entry` refuses; the message
            starts with the key (``"sms: 'often' is not a rate limit ..."``).
    """
    if not isinstance(value, dict):
        raise ValueError('rate_limits must be an object such as {"push": "3/hour;10/day"}')
    for key, limits in value.items():
        try:
            check_entry(key, limits)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None
    return value


def check_entry(key: Any, limits: Any) -> None:
    """Check one entry of a category's ``rate_limits``: ``key`` an enabled channel, content group
    or ``*``, ``limits`` a string :func:`parse_limits` reads.

    Raises:
        ValueError: the reason, without the key (the caller reports it under the key).
    """
    # A channel may share its name with its content group (sms, email): each name once.
    known = tuple(dict.fromkeys((*registry.channels(), *registry.content_groups(), EVERY_CHANNEL)))
    if key not in known:
        raise ValueError(f"not a channel, a content group or {EVERY_CHANNEL!r}: one of {', '.join(known)}")
    parse_limits(limits)


def limits_for(rules: Rules, channel: str) -> tuple[RateLimitItem, ...]:
    """The windows that apply to ``channel`` in a category: its own ``rate_limits`` entry, else
    its content group's, else ``*``, else ``NOTIFY_RATE_LIMIT``; ``()`` for no limit."""
    for key in (channel, registry.channel_class(channel).content_group, EVERY_CHANNEL):
        if key in rules.rate_limits:
            return parse_limits(rules.rate_limits[key])
    return parse_limits(settings.NOTIFY_RATE_LIMIT)


@functools.cache
def limiter() -> MovingWindowRateLimiter:
    """This process's limiter: the ``limits`` Redis storage on the cache's connection pool
    (``NOTIFY_REDIS_URL``, same time-outs), its keys under ``<NOTIFY_CACHE_PREFIX>:rl:``.
    Built on first use, so a forked worker builds its own."""
    from django_redis import get_redis_connection

    from .cache import redis_key

    pool = get_redis_connection("default").connection_pool
    return MovingWindowRateLimiter(storage_from_string(settings.REDIS_URL, connection_pool=pool,
                                                       key_prefix=redis_key("rl")))


def _marker(c: Any) -> str:
    """The Redis key saying a notification's deliveries on a channel were counted."""
    from .cache import redis_key

    return redis_key("rl", "counted", c.notification_id, c.channel)


def mark_counted(c: Any, rules: Rules) -> None:
    """Remember that claim ``c`` (attempt 1, sent nowhere) was counted, for a claim handed back
    with its attempt refunded (every provider's breaker open): its next claim does not count it
    again. Harmless for one that was not counted (no limit, a required category): it goes
    uncounted, as it would have. One round trip."""
    items = limits_for(rules, c.channel)
    if items:
        limiter().storage.get_connection().set(_marker(c), 1, ex=max(item.get_expiry() for item in items))


def at_send(c: Any, rules: Rules, now: dt.datetime) -> Decision:
    """Count a claimed delivery (notify.send.Claim) against its recipient's limits, right
    before its provider is called (the last check of notify.policy.at_send; a required category
    never gets here).

    Returns:
        GO when it may be sent (counted now, or counted before: see the module docstring);
        over a limit, ``suppress`` with reason ``rate_limited``, or, with the category's
        ``over_limit`` ``defer``, ``defer`` until the first second at which every full window
        has room again (the oldest hit in it leaves; the dispatcher then queues it again).

    Several windows (``3/hour;10/day``): each is tested first and nothing is taken unless all
    have room; then each is taken in turn (each take is atomic). Only a race lost between the
    test and a take can leave an earlier, shorter window used up by a delivery the later one
    refuses: the count errs toward fewer sends, never more than a limit. Redis errors propagate
    (notify.send hands the rest of the batch back) rather than send uncounted.
    """
    if c.attempt != 1:
        return GO
    items = limits_for(rules, c.channel)
    if not items:
        return GO
    from .breaker import CIRCUIT_OPEN  # not at import: settings import this module

    rl = limiter()
    connection = rl.storage.get_connection()
    # The marker is read only where it can exist: a sibling device's delivery, or a claim handed
    # back unsent after it was counted (:func:`mark_counted`). Most deliveries pay one round
    # trip here, the hit.
    siblings = c.channel_deliveries > 1
    if (siblings or c.prior_reason == CIRCUIT_OPEN) and connection.exists(_marker(c)):
        return GO
    identity = (c.app_id, c.recipient_id, c.channel, c.category)
    refused = [item for item in items if not rl.test(item, *identity)] if len(items) > 1 else []
    if not refused:
        for item in items:
            if not rl.hit(item, *identity):
                refused = [item]
                break
    if not refused:
        # Set after the take, not before: a sibling delivery that saw it before the take could
        # be sent although the take is then refused. Two siblings racing both count (fewer sends).
        if siblings:
            connection.set(_marker(c), 1, ex=max(item.get_expiry() for item in items))
        return GO
    if rules.over_limit != DEFER:
        return Decision(SUPPRESS, REASON)
    stats = [rl.get_window_stats(item, *identity) for item in refused]
    # A window that has room again by now (a hit left it since the take) allows it at once.
    reset = max([s.reset_time for s in stats if s.remaining <= 0], default=now.timestamp())
    # The moving window still holds its oldest hit at exactly reset_time: the next whole second.
    until = dt.datetime.fromtimestamp(math.floor(reset) + 1, dt.timezone.utc)
    return Decision(DEFER, REASON, max(until, now))

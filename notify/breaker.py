"""A circuit breaker per channel, shared by every worker through Redis.

States: *closed* (normal); *open* for ``cooldown`` seconds after ``threshold`` transient failures
within ``window`` seconds: nobody calls the provider, claimed deliveries are rescheduled, the
dispatcher holds the channel's due retries; then *half-open*: one probe call per second across
all workers. A probe that succeeds closes the breaker (and the dispatcher releases the backlog);
one that fails opens it again.

So an outage costs about one provider call per second instead of one per waiting delivery per
back-off step, and the other channels keep their share of CPU, database and broker (issue:
channel isolation).
"""

from __future__ import annotations

import time

from django.conf import settings
from django_redis import get_redis_connection

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_LOCAL_TTL = 0.5  # seconds a process trusts its last look at a breaker
_local: dict[str, tuple[float, str]] = {}  # channel -> (checked at, state)
_seen_failure: dict[str, bool] = {}


def _key(channel: str, part: str) -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:breaker:{channel}:{part}"


def state(channel: str) -> str:
    """``closed``, ``open`` or ``half_open``; cached per process for half a second, so the send
    path pays at most one Redis read per channel per half second."""
    now = time.monotonic()
    checked, current = _local.get(channel, (-1.0, CLOSED))
    if now - checked > _LOCAL_TTL:
        is_open, tripped = get_redis_connection("default").mget(_key(channel, "open"), _key(channel, "tripped"))
        current = OPEN if is_open else HALF_OPEN if tripped else CLOSED
        _local[channel] = (now, current)
    return current


def tripped_channels(channels) -> list[str]:
    """The channels among ``channels`` whose breaker is open or half-open."""
    return [channel for channel in channels if state(channel) != CLOSED]


def may_call(channel: str) -> bool:
    """True if a worker may call the provider now: always when closed, never when open, and for
    one caller per second (the probe) when half-open."""
    current = state(channel)
    if current == CLOSED:
        return True
    if current == OPEN:
        return False
    return bool(get_redis_connection("default").set(_key(channel, "probe"), 1, nx=True, ex=1))


def cooldown() -> float:
    return float(settings.NOTIFY_BREAKER["cooldown"])


def record_failure(channel: str) -> bool:
    """Count one transient provider failure; trip the breaker at the threshold, or at once when
    the failure was a half-open probe. Returns True if this call tripped it."""
    _seen_failure[channel] = True
    policy = settings.NOTIFY_BREAKER
    redis = get_redis_connection("default")
    failures = _key(channel, "failures")
    pipe = redis.pipeline(transaction=False)
    pipe.incr(failures)
    pipe.expire(failures, policy["window"], nx=True)
    count = pipe.execute()[0]
    if count < policy["threshold"] and state(channel) == CLOSED:
        return False
    pipe = redis.pipeline(transaction=False)
    pipe.set(_key(channel, "open"), 1, px=int(policy["cooldown"] * 1000))
    # Half-open lasts until a probe succeeds; the TTL only bounds a forgotten breaker.
    pipe.set(_key(channel, "tripped"), 1, ex=int(policy["cooldown"]) * 60)
    pipe.delete(failures)
    pipe.execute()
    _local[channel] = (time.monotonic(), OPEN)
    return True


def record_success(channel: str) -> None:
    """A provider call succeeded: close the breaker and forget failures. Costs a Redis command
    only after this process saw a failure of the channel or found the breaker tripped."""
    if _seen_failure.pop(channel, False) or state(channel) != CLOSED:
        get_redis_connection("default").delete(_key(channel, "failures"), _key(channel, "open"),
                                               _key(channel, "tripped"))
        _local[channel] = (time.monotonic(), CLOSED)

"""A circuit breaker per scope, shared by every worker through Redis.

A scope is what one breaker covers, as the adapter declares (``Channel.breaker_scope``): a
provider (``apns``, ``twilio``, ``ses``), or one push service for Web Push.

States: *closed* (normal); *open* for ``cooldown`` seconds after ``threshold`` transient failures
within ``window`` seconds: nobody calls the provider (a channel's secondary provider takes over
where one is configured, notify.providers), claimed deliveries are rescheduled, the dispatcher
holds the channel's due retries; then *half-open*: one probe call per second across
all workers. A probe that succeeds closes the breaker (and the dispatcher releases the backlog);
one that fails opens it again.

So an outage costs about one provider call per second instead of one per waiting delivery per
back-off step, and the other channels keep their share of CPU, database and broker (channel
isolation).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.conf import settings
from django_redis import get_redis_connection

from .cache import redis_key

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_LOCAL_TTL = 0.5  # seconds a process trusts its last look at a breaker
#: The reason of a delivery parked because every provider of its channel is failing.
CIRCUIT_OPEN = "circuit_open"
_local: dict[str, tuple[float, str]] = {}  # scope -> (checked at, state)
_seen_failure: dict[str, bool] = {}


def _key(scope: str, part: str) -> str:
    return redis_key("breaker", scope, part)


def tripped_scopes_key() -> str:
    """A sorted set of the scopes ever tripped, scored by when they last tripped."""
    return redis_key("breakers-tripped")


def state(scope: str) -> str:
    """``closed``, ``open`` or ``half_open``; cached per process for half a second, so the send
    path pays at most one Redis read per scope per half second."""
    return states((scope,))[scope]


def states(scopes: Iterable[str]) -> dict[str, str]:
    """``{scope: "closed" | "open" | "half_open"}`` for ``scopes``, read from Redis in one MGET
    for those whose cached look is older than half a second (none when every look is fresh).

    One read for all of them is what keeps a send's round trips independent of its number of
    channels (tests/test_accept_round_trips.py)."""
    now = time.monotonic()
    wanted = dict.fromkeys(scopes)
    stale = [scope for scope in wanted if scope not in _local or now - _local[scope][0] > _LOCAL_TTL]
    if stale:
        keys = [_key(scope, part) for scope in stale for part in ("open", "tripped")]
        values = get_redis_connection("default").mget(keys)
        for index, scope in enumerate(stale):
            is_open, tripped = values[2 * index], values[2 * index + 1]
            _local[scope] = (now, OPEN if is_open else HALF_OPEN if tripped else CLOSED)
    return {scope: _local[scope][1] for scope in wanted}


def may_call(scope: str) -> bool:
    """True if a worker may call the provider now: always when closed, never when open, and for
    one caller per second (the probe) when half-open."""
    current = state(scope)
    if current == CLOSED:
        return True
    if current == OPEN:
        return False
    return bool(get_redis_connection("default").set(_key(scope, "probe"), 1, nx=True, ex=1))


def cooldown() -> float:
    """Seconds a tripped breaker stays open before it lets a probe through."""
    return float(settings.NOTIFY_BREAKER["cooldown"])


def record_failure(scope: str) -> bool:
    """Count one transient provider failure; trip the breaker at the threshold, or at once when
    the failure was a half-open probe. Returns True if this call tripped it."""
    _seen_failure[scope] = True
    policy = settings.NOTIFY_BREAKER
    redis = get_redis_connection("default")
    failures = _key(scope, "failures")
    pipe = redis.pipeline(transaction=False)
    pipe.incr(failures)
    pipe.expire(failures, policy["window"], nx=True)
    count = pipe.execute()[0]
    if count < policy["threshold"] and state(scope) == CLOSED:
        return False
    pipe = redis.pipeline(transaction=False)
    pipe.set(_key(scope, "open"), 1, px=int(policy["cooldown"] * 1000))
    # Half-open lasts until a probe succeeds; the TTL only bounds a forgotten breaker.
    pipe.set(_key(scope, "tripped"), 1, ex=int(policy["cooldown"]) * 60)
    pipe.delete(failures)
    pipe.zadd(tripped_scopes_key(), {scope: time.time()})  # for the metrics' scrape (no key scan)
    pipe.execute()
    _local[scope] = (time.monotonic(), OPEN)
    return True


def record_success(scope: str) -> None:
    """A provider call succeeded: close the breaker and forget failures. Costs a Redis command
    only after this process saw a failure of the scope or found the breaker tripped."""
    if _seen_failure.pop(scope, False) or state(scope) != CLOSED:
        get_redis_connection("default").delete(_key(scope, "failures"), _key(scope, "open"),
                                               _key(scope, "tripped"))
        _local[scope] = (time.monotonic(), CLOSED)

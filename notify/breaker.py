"""A circuit breaker per channel, shared by every worker through Redis.

When a provider keeps failing (``threshold`` transient failures within ``window`` seconds), the
channel opens for ``cooldown`` seconds: workers stop calling the provider and reschedule what they
claim to the end of the cooldown, and the dispatcher does not re-publish the channel's due
retries until then. An outage therefore costs a few probe calls per cooldown instead of one call
per waiting delivery per back-off step, and the other channels keep their CPU, database and broker
capacity (issue: channel isolation).
"""

from __future__ import annotations

import time

from django.conf import settings
from django_redis import get_redis_connection

_LOCAL_TTL = 0.5  # seconds a worker trusts its last look at the breaker
_local: dict[str, tuple[float, float]] = {}  # channel -> (checked at, open until)


def _key(channel: str, part: str) -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:breaker:{channel}:{part}"


def open_until(channel: str) -> float:
    """Epoch seconds until which ``channel`` is open (0.0 when closed). Cached per process for
    half a second, so the send path pays one Redis read per channel per half second at most."""
    now = time.time()
    checked, until = _local.get(channel, (0.0, 0.0))
    if now - checked > _LOCAL_TTL:
        until = float(get_redis_connection("default").get(_key(channel, "open")) or 0.0)
        _local[channel] = (now, until)
    return until if until > now else 0.0


def open_channels(channels) -> list[str]:
    """The channels among ``channels`` whose breaker is open now."""
    return [channel for channel in channels if open_until(channel)]


def record_failure(channel: str) -> float:
    """Count one transient provider failure; open the breaker at the threshold.

    Returns:
        The epoch second the channel is open until, or 0.0 if it stays closed.
    """
    _seen_failure[channel] = True
    policy = settings.NOTIFY_BREAKER
    redis = get_redis_connection("default")
    failures = _key(channel, "failures")
    pipe = redis.pipeline(transaction=False)
    pipe.incr(failures)
    pipe.expire(failures, policy["window"], nx=True)
    count = pipe.execute()[0]
    if count < policy["threshold"]:
        return 0.0
    until = time.time() + policy["cooldown"]
    pipe = redis.pipeline(transaction=False)
    pipe.set(_key(channel, "open"), until, ex=int(policy["cooldown"]) + 1)
    pipe.delete(failures)
    pipe.execute()
    _local[channel] = (time.time(), until)
    return until


_seen_failure: dict[str, bool] = {}


def record_success(channel: str) -> None:
    """A provider call succeeded: forget earlier failures (one Redis command, only after this
    process has seen a failure of the channel)."""
    if _seen_failure.pop(channel, False):
        get_redis_connection("default").delete(_key(channel, "failures"))


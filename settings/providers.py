"""Channels and providers, their credentials, queues and retry policy.

This is the one place that maps environment variables to channel settings, and it does so from
the adapters' own declarations (``channels.base.Setting``, ``channels.base.RetryDefaults``):
adding an adapter adds its variables here without a line changing.

Provider values left unset are, with ``NOTIFY_SANDBOX_FALLBACK`` on (``settings.dev`` for
``make run``, ``settings.test``), taken from the provider sandbox's ``sandbox.json`` when an
adapter is built (notify.providers). With the production settings the fallback is off and a
provider setting that is missing is a configuration error at start-up that names the variable.
"""

from channels import registry

from .base import VAR_DIR
from .env import env, env_bool, env_float, env_int, env_list

#: Extra adapter classes (``module:Class``) beside the built-in ones.
NOTIFY_EXTRA_PROVIDERS = env_list("NOTIFY_EXTRA_PROVIDERS")
registry.configure(NOTIFY_EXTRA_PROVIDERS, env_list("NOTIFY_CHANNELS") or None)
#: The enabled channels (``NOTIFY_CHANNELS``; every registered one by default).
NOTIFY_CHANNELS = registry.channels()

NOTIFY_SANDBOX_DIR = env("NOTIFY_SANDBOX_DIR", str(VAR_DIR / "sandbox"))
#: Fill unset provider settings from the sandbox's sandbox.json (the embedded default).
NOTIFY_SANDBOX_FALLBACK = env_bool("NOTIFY_SANDBOX_FALLBACK", False)

#: provider → setting key → the environment's value (None when unset).
NOTIFY_PROVIDER_ENV = {
    provider: {s.key: env(s.env) or None for s in cls.settings}
    for provider, cls in registry.providers().items()
}


def _providers_of(channel: str) -> tuple[str, ...]:
    prefix = f"NOTIFY_{channel.upper()}_"
    primary = env(prefix + "PROVIDER", registry.providers_of(channel)[0])
    secondary = env(prefix + "SECONDARY_PROVIDER")
    chosen = (primary, secondary) if secondary else (primary,)
    for provider in chosen:
        if provider not in registry.providers_of(channel):
            raise ValueError(f"{prefix}PROVIDER / {prefix}SECONDARY_PROVIDER: {provider!r} is not a "
                             f"provider of {channel}; choose from {list(registry.providers_of(channel))}")
    if secondary == primary:
        raise ValueError(f"{prefix}SECONDARY_PROVIDER must differ from the primary provider")
    return chosen


#: channel → (primary provider, optional secondary taking over while the primary's breaker is
#: open), from ``NOTIFY_<CHANNEL>_PROVIDER`` and ``NOTIFY_<CHANNEL>_SECONDARY_PROVIDER``.
NOTIFY_CHANNEL_PROVIDERS = {channel: _providers_of(channel) for channel in NOTIFY_CHANNELS}


def _policy(channel: str) -> dict:
    cls = registry.channel_class(channel)
    defaults = cls.retry
    prefix = f"NOTIFY_{channel.upper()}_"
    return {
        "max_attempts": env_int(prefix + "MAX_ATTEMPTS", defaults.max_attempts),
        "max_age": env_int(prefix + "MAX_AGE", defaults.max_age),  # seconds since the notification
        "backoff_base": env_float(prefix + "BACKOFF_BASE", defaults.backoff_base),  # seconds
        "backoff_max": env_float(prefix + "BACKOFF_MAX", defaults.backoff_max),  # seconds
        "retry_after_max": env_float(prefix + "RETRY_AFTER_MAX", defaults.retry_after_max),  # clamp, seconds
        # A send whose worker died mid-call has an unknown outcome. Where the device collapses a
        # resend with the same collapse id, resending cannot show twice; elsewhere the delivery
        # fails visibly (replayable from the admin) instead of risking a double.
        "on_unknown_outcome": env(prefix + "ON_UNKNOWN_OUTCOME", "resend" if cls.collapses_resends else "fail"),
    }


#: Retry policy per channel, declared once (defaults from the adapters).
NOTIFY_RETRY_POLICY = {channel: _policy(channel) for channel in NOTIFY_CHANNELS}

#: A worker holds a delivery "sending" for at most this long (seconds) before another may take
#: it over; must exceed the longest provider timeout.
NOTIFY_SEND_LEASE = env_int("NOTIFY_SEND_LEASE", 60)

#: The dispatcher publishes a queued delivery that no outbox relay (``manage.py relay``) has
#: published after this long (seconds): the relay is down, or the broker was.
NOTIFY_REPUBLISH_AFTER = env_int("NOTIFY_REPUBLISH_AFTER", 5)
#: At most this many deliveries of one channel travel in one task: a worker pays Celery's and
#: RabbitMQ's per-message cost once per batch (a batch holds what one relay round found).
NOTIFY_TASK_BATCH = env_int("NOTIFY_TASK_BATCH", 20)
#: The same for a broadcast's deliveries (notify.models.OutboxBatch): bulk traffic, where the
#: relay's and RabbitMQ's cost per message counts more than how soon each task starts; the
#: worker still sends a task in waves within its providers' limits and NOTIFY_TASK_BUDGET.
NOTIFY_BROADCAST_TASK_BATCH = env_int("NOTIFY_BROADCAST_TASK_BATCH", 100)
#: A worker stops taking new deliveries of its batch after this long (seconds) and hands the
#: rest back to the relay, so a slow provider cannot push a batch past the task's time limit.
NOTIFY_TASK_BUDGET = env_int("NOTIFY_TASK_BUDGET", 30)


def _send_concurrency(value: str) -> dict[str, int]:
    limits = {provider: cls.send_concurrency for provider, cls in registry.providers().items()}
    for item in filter(None, (part.strip() for part in value.split(","))):
        provider, _, number = item.partition("=")
        provider = provider.strip()
        if provider not in limits or not number.strip().isdigit() or int(number) < 1:
            raise ValueError(f"NOTIFY_SEND_CONCURRENCY: {item!r} is not provider=N (N >= 1) for a provider "
                             f"of {sorted(limits)}")
        limits[provider] = int(number)
    return limits


#: provider → how many of its sends one worker process runs at once (notify.send): the adapter's
#: ``send_concurrency``, overridden by ``NOTIFY_SEND_CONCURRENCY`` ("twilio=8,smtp=1").
NOTIFY_SEND_CONCURRENCY = _send_concurrency(env("NOTIFY_SEND_CONCURRENCY", ""))
#: After a publishing round of at least NOTIFY_RELAY_BUSY_ROWS deliveries, the outbox relay waits
#: until this long (milliseconds) after it before the next, so that under load one round (and
#: one task per channel) carries what the interval gathered; lighter traffic goes out at once.
NOTIFY_RELAY_INTERVAL_MS = env_int("NOTIFY_RELAY_INTERVAL_MS", 100)
NOTIFY_RELAY_BUSY_ROWS = env_int("NOTIFY_RELAY_BUSY_ROWS", 10)
#: A published delivery no worker claimed after this long (seconds) is published again (the
#: broker lost it); long enough not to double-publish a normal backlog.
NOTIFY_REPUBLISH_STALE_AFTER = env_int("NOTIFY_REPUBLISH_STALE_AFTER", 900)

#: Circuit breaker per provider (notify.breaker): this many transient failures within ``window``
#: seconds open it for ``cooldown`` seconds.
NOTIFY_BREAKER = {
    "threshold": env_int("NOTIFY_BREAKER_THRESHOLD", 20),
    "window": env_int("NOTIFY_BREAKER_WINDOW", 30),
    "cooldown": env_float("NOTIFY_BREAKER_COOLDOWN", 5.0),
}

"""Provider endpoints, credentials, queues and retry policy.

Each channel setting is read from its environment variable; when the variable is unset the value
comes from the provider sandbox's ``sandbox.json`` (``NOTIFY_SANDBOX_DIR``), which makes the
sandbox the embedded default. Setting the variables points the same code at the real providers.
Resolution happens lazily in :func:`notify.channel_config.config_for`, once per worker process.
"""

from .base import VAR_DIR
from .env import env, env_float, env_int

NOTIFY_SANDBOX_DIR = env("NOTIFY_SANDBOX_DIR", str(VAR_DIR / "sandbox"))

#: channel → setting key → (environment variable, path in sandbox.json or None, default)
NOTIFY_CHANNEL_SETTINGS = {
    "apns": {
        "url": ("NOTIFY_APNS_URL", "apns.url", "https://api.push.apple.com"),
        "key_file": ("NOTIFY_APNS_KEY_FILE", "apns.key_file", None),
        "key_id": ("NOTIFY_APNS_KEY_ID", "apns.key_id", None),
        "team_id": ("NOTIFY_APNS_TEAM_ID", "apns.team_id", None),
        "topic": ("NOTIFY_APNS_TOPIC", "apns.topic", None),
        "ca_file": ("NOTIFY_PROVIDER_CA_FILE", "ca_file", None),
        "timeout": ("NOTIFY_APNS_TIMEOUT", None, "10"),
    },
    "fcm": {
        "url": ("NOTIFY_FCM_URL", "fcm.url", "https://fcm.googleapis.com"),
        "service_account_file": ("NOTIFY_FCM_SERVICE_ACCOUNT_FILE", "fcm.service_account_file", None),
        "project_id": ("NOTIFY_FCM_PROJECT_ID", "fcm.project_id", None),
        "ca_file": ("NOTIFY_PROVIDER_CA_FILE", "ca_file", None),
        "timeout": ("NOTIFY_FCM_TIMEOUT", None, "10"),
    },
    "webpush": {
        # Not a client setting: the sandbox's push service, whose private address subscriptions
        # may use (notify.validators).
        "sandbox_push_url": ("NOTIFY_SANDBOX_PUSH_URL", "webpush.url", None),
        "vapid_private_key_file": ("NOTIFY_VAPID_PRIVATE_KEY_FILE", "webpush.vapid_private_key_file", None),
        "vapid_public_key": ("NOTIFY_VAPID_PUBLIC_KEY", "webpush.vapid_public_key", None),
        "vapid_subject": ("NOTIFY_VAPID_SUBJECT", "webpush.vapid_subject", None),
        "ca_file": ("NOTIFY_PROVIDER_CA_FILE", "ca_file", None),
        "timeout": ("NOTIFY_WEBPUSH_TIMEOUT", None, "10"),
    },
    "sms": {
        "url": ("NOTIFY_TWILIO_URL", "twilio.url", "https://api.twilio.com"),
        "account_sid": ("NOTIFY_TWILIO_ACCOUNT_SID", "twilio.account_sid", None),
        "auth_token": ("NOTIFY_TWILIO_AUTH_TOKEN", "twilio.auth_token", None),
        "from_number": ("NOTIFY_TWILIO_FROM", "twilio.from_number", None),
        "messaging_service_sid": ("NOTIFY_TWILIO_MESSAGING_SERVICE_SID", None, None),
        "ca_file": ("NOTIFY_PROVIDER_CA_FILE", "ca_file", None),
        "timeout": ("NOTIFY_TWILIO_TIMEOUT", None, "10"),
    },
    "email": {
        "endpoint_url": ("AWS_ENDPOINT_URL_SESV2", "ses.url", None),
        "region": ("NOTIFY_SES_REGION", "ses.region", "us-east-1"),
        "access_key_id": ("NOTIFY_SES_ACCESS_KEY_ID", "ses.access_key_id", None),
        "secret_access_key": ("NOTIFY_SES_SECRET_ACCESS_KEY", "ses.secret_access_key", None),
        "from_address": ("NOTIFY_SES_FROM", "ses.from_address", None),
        "configuration_set": ("NOTIFY_SES_CONFIGURATION_SET", None, None),
        "ca_file": ("NOTIFY_PROVIDER_CA_FILE", "ca_file", None),
        "timeout": ("NOTIFY_SES_TIMEOUT", None, "10"),
    },
}



def _policy(channel: str, attempts: int, max_age: int) -> dict:
    prefix = f"NOTIFY_{channel.upper()}_"
    return {
        "max_attempts": env_int(prefix + "MAX_ATTEMPTS", attempts),
        "max_age": env_int(prefix + "MAX_AGE", max_age),  # seconds since the notification
        "backoff_base": env_float(prefix + "BACKOFF_BASE", 1.0),  # seconds
        "backoff_max": env_float(prefix + "BACKOFF_MAX", 600.0),  # seconds
        "retry_after_max": env_float(prefix + "RETRY_AFTER_MAX", 3600.0),  # clamp, seconds
        # A send whose worker died mid-call has an unknown outcome. Push providers collapse a
        # resend with the same collapse id, so resending cannot show twice; SMS and email have no
        # such key, so they fail visibly (replayable from the admin) instead of risking a double.
        "on_unknown_outcome": env(prefix + "ON_UNKNOWN_OUTCOME", "resend" if channel in {"apns", "fcm", "webpush"} else "fail"),
    }


#: Retry policy per channel, declared once (issue: retries with back-off and a budget).
NOTIFY_RETRY_POLICY = {
    "apns": _policy("apns", 8, 6 * 3600),
    "fcm": _policy("fcm", 8, 6 * 3600),
    "webpush": _policy("webpush", 8, 6 * 3600),
    "sms": _policy("sms", 6, 3600),
    "email": _policy("email", 8, 12 * 3600),
}

#: A worker holds a delivery "sending" for at most this long (seconds) before another may take
#: it over; must exceed the longest provider timeout.
NOTIFY_SEND_LEASE = env_int("NOTIFY_SEND_LEASE", 60)
#: ``host:port`` of Web Push services on private addresses that subscriptions may use (an
#: on-premises push service); every other private, loopback or link-local endpoint is refused.
NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS = [h for h in env("NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS", "").split(",") if h]

#: The dispatcher publishes a queued delivery that no outbox relay (``manage.py relay``) has
#: published after this long (seconds): the relay is down, or the broker was.
NOTIFY_REPUBLISH_AFTER = env_int("NOTIFY_REPUBLISH_AFTER", 5)
#: At most this many deliveries of one channel travel in one task: a worker pays Celery's and
#: RabbitMQ's per-message cost once per batch (a batch holds what one relay round found).
NOTIFY_TASK_BATCH = env_int("NOTIFY_TASK_BATCH", 20)
#: A worker stops taking new deliveries of its batch after this long (seconds) and hands the
#: rest back to the relay, so a slow provider cannot push a batch past the task's time limit.
NOTIFY_TASK_BUDGET = env_int("NOTIFY_TASK_BUDGET", 30)
#: After a publishing round of at least NOTIFY_RELAY_BUSY_ROWS deliveries, the outbox relay waits
#: until this long (milliseconds) after it before the next, so that under load one round (and
#: one task per channel) carries what the interval gathered; lighter traffic goes out at once.
NOTIFY_RELAY_INTERVAL_MS = env_int("NOTIFY_RELAY_INTERVAL_MS", 100)
NOTIFY_RELAY_BUSY_ROWS = env_int("NOTIFY_RELAY_BUSY_ROWS", 10)
#: A published delivery no worker claimed after this long (seconds) is published again (the
#: broker lost it); long enough not to double-publish a normal backlog.
NOTIFY_REPUBLISH_STALE_AFTER = env_int("NOTIFY_REPUBLISH_STALE_AFTER", 900)

#: Circuit breaker per channel (notify.breaker): this many transient failures within ``window``
#: seconds open the channel for ``cooldown`` seconds.
NOTIFY_BREAKER = {
    "threshold": env_int("NOTIFY_BREAKER_THRESHOLD", 20),
    "window": env_int("NOTIFY_BREAKER_WINDOW", 30),
    "cooldown": env_float("NOTIFY_BREAKER_COOLDOWN", 5.0),
}

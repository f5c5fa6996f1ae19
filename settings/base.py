"""Core Django, database, cache and API settings."""

import base64
import hashlib
import os
import re
from pathlib import Path

from cryptography.fernet import Fernet

# The one list of scopes (API keys, OAuth2 clients: OAUTH2_PROVIDER below); it imports no settings.
from notify import scopes as _scopes

from .env import env, env_bool, env_float, env_int, env_list, env_rate_limit

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("NOTIFY_VAR_DIR", str(BASE_DIR / "var")))

#: The key of ``make run`` and the tests when DJANGO_SECRET_KEY is unset. It is public (it is in
#: this file), so anyone could sign links and sessions with it: settings.production refuses it.
INSECURE_DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-in-production-0123456789"
SECRET_KEY = env("DJANGO_SECRET_KEY", INSECURE_DEV_SECRET_KEY)
#: The Fernet key of ``make run`` and the tests when NOTIFY_CREDENTIAL_KEYS is unset, derived from
#: a public text (so public too): settings.production refuses to encrypt with it.
INSECURE_DEV_CREDENTIAL_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"notify: development-only credential key").digest()).decode()
#: Fernet keys (comma-separated) that seal the apps' own provider credentials (notify.sealing):
#: the first encrypts, every one decrypts, so a new key is put first and the old one kept until
#: ``manage.py rotate_credential_keys`` has re-encrypted every row. A bad key stops the start.
NOTIFY_CREDENTIAL_KEYS = env_list("NOTIFY_CREDENTIAL_KEYS") or [INSECURE_DEV_CREDENTIAL_KEY]
for _number, _key in enumerate(NOTIFY_CREDENTIAL_KEYS, 1):
    try:
        Fernet(_key)
    except ValueError:
        # Which one, never the value: the message ends up in logs.
        raise ValueError(f"NOTIFY_CREDENTIAL_KEYS: key {_number} is not a Fernet key (32 bytes, "
                         f"base64url): make one with python -c 'from cryptography.fernet import Fernet; "
                         f"print(Fernet.generate_key().decode())'") from None
#: Off unless DJANGO_DEBUG is set (`make run` sets it: devtools.run).
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    # OAuth2 client credentials beside the API keys (notify.oauth).
    "oauth2_provider",
    "drf_spectacular",
    # Swagger UI and ReDoc served from this service (no CDN).
    "drf_spectacular_sidecar",
    "notify",
]

MIDDLEWARE = [
    "notify.api.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "notify.static.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # X-Frame-Options: DENY. The admin's email preview is an <iframe srcdoc>, which it does not cover.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "notify.urls"
WSGI_APPLICATION = "notify.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env("NOTIFY_DB_NAME", "notify"),
        "USER": env("NOTIFY_DB_USER", "postgres"),
        "PASSWORD": env("NOTIFY_DB_PASSWORD", ""),
        "HOST": env("NOTIFY_DB_HOST", "127.0.0.1"),
        "PORT": env_int("NOTIFY_DB_PORT", 5432),
        # Persistent connections: no per-request / per-message connection set-up.
        "CONN_MAX_AGE": env_int("NOTIFY_DB_CONN_MAX_AGE", 300),
        "CONN_HEALTH_CHECKS": True,
        # prepare_threshold: lets notify.store prepare the hot statements (Django's own client-side
        # binding cursors never prepare). keepalives: a half-open socket after a failover is
        # noticed instead of hanging the relay or a worker.
        "OPTIONS": {"connect_timeout": 5, "prepare_threshold": 5 if env("NOTIFY_DB_PREPARE", "1") == "1" else None,
                    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3},
        "TEST": {"NAME": env("NOTIFY_TEST_DB_NAME", "test_notify")},
    }
}
#: Prepare the hot paths' statements on the server (notify.store); 0 behind an old transaction-pooling PgBouncer.
NOTIFY_DB_PREPARE = env("NOTIFY_DB_PREPARE", "1") == "1"

REDIS_URL = env("NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/0")
NOTIFY_BROKER_URL = env("NOTIFY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: ``classic`` or ``quorum``: the type celeryconfig declares the durable queues with (every
#: channel's, its dead letters', the maintenance queue). Quorum queues are replicated over a
#: RabbitMQ cluster and outlive a node (docs/scaling.md); a queue keeps the type it was first
#: declared with, so switching an existing vhost needs the migration in README.
NOTIFY_QUEUE_TYPE = env("NOTIFY_QUEUE_TYPE", "classic")
if NOTIFY_QUEUE_TYPE not in ("classic", "quorum"):
    raise ValueError(f"NOTIFY_QUEUE_TYPE must be classic or quorum, got {NOTIFY_QUEUE_TYPE!r}")
#: Celery task events (one extra publish per task state) only while someone watches (Flower).
NOTIFY_TASK_EVENTS = env_bool("NOTIFY_TASK_EVENTS", False)
#: RabbitMQ's management API, which Flower reads the queues' depths from.
NOTIFY_BROKER_API_URL = env("NOTIFY_BROKER_API_URL", "http://guest:guest@127.0.0.1:15672/api/")
#: ``user:password`` Flower asks for (HTTP basic auth); Flower refuses to start without it.
NOTIFY_FLOWER_BASIC_AUTH = env("NOTIFY_FLOWER_BASIC_AUTH", "")
#: Seconds the readiness endpoint waits for each of PostgreSQL, RabbitMQ and Redis.
NOTIFY_HEALTH_TIMEOUT = env_float("NOTIFY_HEALTH_TIMEOUT", 2.0)
#: Celery's per-task log lines (received, succeeded); WARNING keeps them off the hot path.
NOTIFY_TASK_LOG_LEVEL = env("NOTIFY_TASK_LOG_LEVEL", "WARNING")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("NOTIFY_CACHE_PREFIX", "notify"),
        "TIMEOUT": env_int("NOTIFY_CACHE_TTL", 300),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 2,
            "SOCKET_TIMEOUT": 2,
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
#: The hosted preference page's translations (notify.preferences); first, so they win over Django's own.
LOCALE_PATHS = [BASE_DIR / "notify" / "locale"]
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# The API process serves the admin's and the API docs' static files itself (WhiteNoise): the
# collected files when `manage.py collectstatic` ran, else straight from the installed apps.
WHITENOISE_USE_FINDERS = True
# Files browsers ask for at the site's root whatever the page (favicon.ico), served by WhiteNoise.
WHITENOISE_ROOT = BASE_DIR / "notify" / "root"

# Bodies larger than this are refused with 413 before they are parsed (notify.api.middleware).
NOTIFY_MAX_BODY_BYTES = env_int("NOTIFY_MAX_BODY_BYTES", 64 * 1024)
#: Most notifications one call to the batch endpoint (POST /api/v1/notifications/batch) takes.
NOTIFY_BATCH_MAX_ITEMS = 500
#: Body bytes the batch endpoint allows per item: a send by template with its data and event_id
#: is a few hundred bytes; 2 KiB leaves room for short inline content.
NOTIFY_BATCH_ITEM_BYTES = env_int("NOTIFY_BATCH_ITEM_BYTES", 2 * 1024)
#: The batch endpoint's body limit: a full batch at the per-item allowance (never below a single
#: send's), and at most _BATCH_BODY_BOUND: Django holds the body and its parsed JSON in memory.
NOTIFY_BATCH_MAX_BODY_BYTES = max(NOTIFY_MAX_BODY_BYTES, NOTIFY_BATCH_MAX_ITEMS * NOTIFY_BATCH_ITEM_BYTES)
_BATCH_BODY_BOUND = 8 * 1024 * 1024
if NOTIFY_BATCH_MAX_BODY_BYTES > _BATCH_BODY_BOUND:
    raise ValueError(f"NOTIFY_MAX_BODY_BYTES and NOTIFY_BATCH_ITEM_BYTES x {NOTIFY_BATCH_MAX_ITEMS} must stay within "
                     f"{_BATCH_BODY_BOUND} bytes, got {NOTIFY_BATCH_MAX_BODY_BYTES}")
#: Most recipients one call to the bulk endpoint (POST /api/v1/notifications/bulk) takes.
NOTIFY_BULK_MAX_RECIPIENTS = 10_000
#: Body bytes the bulk endpoint allows per recipient: an item is only ``{"recipient", "data",
#: "event_id"}`` (the template and shared fields are given once), typically 100-200 bytes.
NOTIFY_BULK_ITEM_BYTES = env_int("NOTIFY_BULK_ITEM_BYTES", 512)
#: The bulk endpoint's body limit: a full call at the per-item allowance, within the same bound
#: as the batch endpoint's (the body and its parsed JSON are held in memory).
NOTIFY_BULK_MAX_BODY_BYTES = max(NOTIFY_MAX_BODY_BYTES, NOTIFY_BULK_MAX_RECIPIENTS * NOTIFY_BULK_ITEM_BYTES)
if NOTIFY_BULK_MAX_BODY_BYTES > _BATCH_BODY_BOUND:
    raise ValueError(f"NOTIFY_BULK_ITEM_BYTES x {NOTIFY_BULK_MAX_RECIPIENTS} must stay within {_BATCH_BODY_BOUND} "
                     f"bytes, got {NOTIFY_BULK_MAX_BODY_BYTES}")
#: Recipients one broadcast fan-out task writes in one transaction (notify.broadcast).
NOTIFY_BROADCAST_BATCH = env_int("NOTIFY_BROADCAST_BATCH", 5000)
#: Id ranges a fan-out batch is split into, each written at once in its own transaction on its
#: own connection (notify.broadcast.fan_out): about one per database core the fan-out may use.
NOTIFY_BROADCAST_LANES = max(1, env_int("NOTIFY_BROADCAST_LANES", 2))
#: Seconds a running broadcast may go without a committed batch before the dispatcher starts its
#: fan-out again (its task was lost with a worker); the cursor and idempotency keys make that safe.
NOTIFY_BROADCAST_STALL_AFTER = env_int("NOTIFY_BROADCAST_STALL_AFTER", 30)
#: Most ``external_ids`` one broadcast segment lists (a segment of more is better tagged: the body stays within NOTIFY_MAX_BODY_BYTES).
NOTIFY_BROADCAST_MAX_IDS = env_int("NOTIFY_BROADCAST_MAX_IDS", 1000)
#: Amazon SNS's webhook body limit: an SNS message is up to 256 KiB (SES puts the mail's headers in
#: it when asked), JSON-escaped inside the envelope (quotes and backslashes double), plus the
#: envelope's own fields (https://docs.aws.amazon.com/sns/latest/api/API_Publish.html).
NOTIFY_SNS_MAX_BODY_BYTES = 1024 * 1024
# Django's own cap is the largest any endpoint takes; the middleware applies each endpoint's.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(NOTIFY_BATCH_MAX_BODY_BYTES, NOTIFY_BULK_MAX_BODY_BYTES, NOTIFY_SNS_MAX_BODY_BYTES)

REST_FRAMEWORK = {
    # An API key, or an OAuth2 access token (``Bearer``): each class takes its own header keyword.
    "DEFAULT_AUTHENTICATION_CLASSES": ["notify.api.auth.AppAPIKeyAuthentication",
                                       "notify.api.auth.OAuthTokenAuthentication"],
    # An API key holding the scope the view names (notify.api.permissions, notify.scopes).
    "DEFAULT_PERMISSION_CLASSES": ["notify.api.permissions.HasRequiredScope"],
    "DEFAULT_PARSER_CLASSES": ["notify.api.parsers.JSONParser"],  # nesting-limited, see there
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "notify.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "notify API",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Swagger UI would otherwise send the schema to validator.swagger.io for its badge.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # The errors every endpoint shares (API key, body, rate limit), documented once.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "notify.api.docs.add_common_errors",
                             # one section per resource in Swagger UI and ReDoc
                             "notify.api.docs.group_by_resource"],
    # A preference's channel and a fallback's items are the same choice set: one name for it.
    "ENUM_NAME_OVERRIDES": {"ChannelOrGroupEnum": "notify.api.serializers.PREFERENCE_CHOICES"},
}

# API keys travel as "Authorization: Api-Key <key>" (djangorestframework-api-key's format).
API_KEY_CUSTOM_HEADER = "HTTP_AUTHORIZATION"

#: Seconds an OAuth2 access token (client credentials grant, ``POST /oauth/token/``) is valid.
NOTIFY_OAUTH_TOKEN_SECONDS = env_int("NOTIFY_OAUTH_TOKEN_SECONDS", 3600)
if NOTIFY_OAUTH_TOKEN_SECONDS <= 0:
    raise ValueError(f"NOTIFY_OAUTH_TOKEN_SECONDS must be more than 0, got {NOTIFY_OAUTH_TOKEN_SECONDS}")
# django-oauth-toolkit: only its token and revocation endpoints are routed (notify/urls.py), for
# clients of the client credentials grant (notify.oauth), whose scopes are the API keys' own.
#: Django's own list, then the hash of OAuth2 client secrets (notify.hashers: random 128-character
#: secrets, not passwords; never the first, so no password is hashed with it).
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
    "notify.hashers.RandomSecretHasher",
]
OAUTH2_PROVIDER = {
    "CLIENT_SECRET_HASHER": "pbkdf2_sha256_random_secret",
    "SCOPES": dict(_scopes.SCOPES),
    "SCOPES_BACKEND_CLASS": "notify.oauth.ClientScopes",
    "OAUTH2_VALIDATOR_CLASS": "notify.oauth.Validator",
    "ACCESS_TOKEN_EXPIRE_SECONDS": NOTIFY_OAUTH_TOKEN_SECONDS,
    # Every RFC 9700 (OAuth 2.0 security BCP) rule on: only a SHA-256 of each token is stored, and
    # `manage.py check --deploy` stays free of warnings. The others cover grants no client here has.
    **{f"COMPLIANT_BCP_RFC9700_{rule}": True for rule in (
        "TOKEN_STORAGE", "IMPLICIT_GRANT", "PASSWORD_GRANT", "PKCE_METHOD", "ACCESS_TOKEN_TRANSPORT",
        "AUTHZ_RESPONSE_ISS", "REFRESH_TOKEN", "REDIRECT_URI_SCHEME", "REDIRECT_URI_MATCHING", "PKCE_REQUIRED")},
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
}
#: DOT's own application model, not swapped; named because notify.OAuthClient points at it (Django
#: resolves a relation to a swappable model through this setting).
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"

# --- Product rules --------------------------------------------------------------------------
#: Idempotency keys are remembered this long (seconds); after it the same key makes a new send.
NOTIFY_IDEMPOTENCY_RETENTION = env_int("NOTIFY_IDEMPOTENCY_RETENTION", 7 * 24 * 3600)
#: Per recipient, channel and category, for a category without its own ``rate_limits``: the
#: most deliveries over moving windows (``limits`` syntax, ``"3/hour;10/day"``; ``"none"``: no
#: limit). Checked here: a bad value stops the start (notify.ratelimit).
NOTIFY_RATE_LIMIT = env_rate_limit("NOTIFY_RATE_LIMIT", "100/hour")
#: Per API key: requests per window to the send endpoint.
NOTIFY_API_RATE_LIMIT = env("NOTIFY_API_RATE_LIMIT", "100000/m")
#: Default time to live of a notification (seconds).
NOTIFY_DEFAULT_TTL = env_int("NOTIFY_DEFAULT_TTL", 24 * 3600)
#: Where SMS status callbacks and email unsubscribe links point (this service's public URL).
NOTIFY_PUBLIC_URL = env("NOTIFY_PUBLIC_URL", "http://127.0.0.1:8000")
#: Seconds a recipient's preference-page link (in emails, from the API) stays valid.
NOTIFY_PREFERENCE_LINK_MAX_AGE = env_int("NOTIFY_PREFERENCE_LINK_MAX_AGE", 30 * 24 * 3600)
#: Seconds after a send in which a tracking link fetched with a scanner's User-Agent (or none) is
#: taken for a mail security gateway's prefetch and not counted (notify.tracking_views).
NOTIFY_TRACKING_SCANNER_WINDOW = env_int("NOTIFY_TRACKING_SCANNER_WINDOW", 60)

# --- Provider events over Amazon SNS (notify.webhooks.sns) ---------------------------------------
#: Topics whose SNS messages are taken (ARNs, comma-separated); empty: any topic whose signature
#: verifies (AWS advises naming them: "Verifying the signatures of Amazon SNS messages").
NOTIFY_SNS_TOPIC_ARNS = env_list("NOTIFY_SNS_TOPIC_ARNS")
#: The host (with ``:port`` when the URL has one) that signing-certificate and subscribe URLs
#: must have, a regular expression matched in full: AWS's SNS endpoints by default.
NOTIFY_SNS_CERT_HOST_PATTERN = env("NOTIFY_SNS_CERT_HOST_PATTERN", r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
try:
    re.compile(NOTIFY_SNS_CERT_HOST_PATTERN)
except re.error as error:
    raise ValueError(f"NOTIFY_SNS_CERT_HOST_PATTERN is not a regular expression: {error}") from None
#: CA bundle the HTTPS certificate of that host is verified against; empty: the system's CAs.
NOTIFY_SNS_CA_FILE = env("NOTIFY_SNS_CA_FILE")

# --- Analytics (notify.analytics) -------------------------------------------------------------
#: Seconds a delivery-log row, event or notification must be old before the rollup counts it: a
#: floor under its own check of the open transactions (notify.store.rollup_analytics).
NOTIFY_ANALYTICS_LAG = env_float("NOTIFY_ANALYTICS_LAG", 60.0)
#: Seconds between two rollups run by the maintenance worker's beat.
NOTIFY_ANALYTICS_INTERVAL = env_float("NOTIFY_ANALYTICS_INTERVAL", 60.0)

# --- Partitioned history (notify.partitions) ---------------------------------------------------
#: Days ahead of today (UTC) for which the deliveries' and the log's day partitions are kept
#: created (the maintenance worker's beat, hourly); a row no partition covers goes to DEFAULT.
NOTIFY_HISTORY_PARTITIONS_AHEAD = env_int("NOTIFY_HISTORY_PARTITIONS_AHEAD", 7)
#: Days of deliveries and their log kept: older day partitions are dropped (never one still
#: holding an unfinished delivery), with their events and notifications. 0: keep forever.
NOTIFY_HISTORY_RETENTION_DAYS = env_int("NOTIFY_HISTORY_RETENTION_DAYS", 90)
if NOTIFY_HISTORY_PARTITIONS_AHEAD < 1 or NOTIFY_HISTORY_RETENTION_DAYS < 0:
    raise ValueError("NOTIFY_HISTORY_PARTITIONS_AHEAD must be 1 or more, NOTIFY_HISTORY_RETENTION_DAYS 0 or more")

# --- Monitoring (notify.metrics, notify.logmask) ---------------------------------------------
#: Where every process of this host writes its Prometheus samples (prometheus-client's
#: multiprocess mode). Set here, before anything imports prometheus_client; wiped by whoever
#: starts the processes (devtools.stack, the container's entry).
NOTIFY_METRICS_DIR = Path(env("NOTIFY_METRICS_DIR", str(VAR_DIR / "metrics")))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(NOTIFY_METRICS_DIR)
NOTIFY_METRICS_DIR.mkdir(parents=True, exist_ok=True)
#: ``/metrics`` answers requests from these networks (CIDR, comma-separated) without a token.
NOTIFY_METRICS_ALLOW = [item.strip() for item in env("NOTIFY_METRICS_ALLOW", "127.0.0.0/8,::1/128").split(",")
                        if item.strip()]
#: A bearer token that opens ``/metrics`` from anywhere (``Authorization: Bearer <token>``); empty: none.
NOTIFY_METRICS_TOKEN = env("NOTIFY_METRICS_TOKEN", "")
#: ``json`` (one JSON object per line, for log collectors) or ``plain`` (for reading in a terminal).
NOTIFY_LOG_FORMAT = env("NOTIFY_LOG_FORMAT", "json")
if NOTIFY_LOG_FORMAT not in ("json", "plain"):
    raise ValueError(f"NOTIFY_LOG_FORMAT must be json or plain, got {NOTIFY_LOG_FORMAT!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}},
    },
    # Phone numbers, email addresses and device tokens never reach a log line (notify.logmask).
    "filters": {"mask": {"()": "notify.logmask.MaskFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": NOTIFY_LOG_FORMAT, "filters": ["mask"]}},
    "root": {"handlers": ["console"], "level": env("NOTIFY_LOG_LEVEL", "INFO")},
    # Client libraries that log every request at INFO: that is a log line per message on the
    # workers' hot path.
    "loggers": {name: {"level": env("NOTIFY_CLIENT_LOG_LEVEL", "WARNING")}
                for name in ("twilio.http_client", "httpx", "httpcore", "botocore", "urllib3", "google.auth")},
}

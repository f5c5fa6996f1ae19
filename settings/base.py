"""Core Django, database, cache and API settings."""

import os
from pathlib import Path

from .env import env, env_bool, env_float, env_int, env_rate_limit

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("NOTIFY_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env("DJANGO_SECRET_KEY", "dev-only-insecure-secret-key-change-me-in-production-0123456789")
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

# Bodies larger than this are refused with 413 before they are parsed.
NOTIFY_MAX_BODY_BYTES = env_int("NOTIFY_MAX_BODY_BYTES", 64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = NOTIFY_MAX_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["notify.api.auth.AppAPIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
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
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "notify.api.docs.add_common_errors"],
    # A preference's channel and a fallback's items are the same choice set: one name for it.
    "ENUM_NAME_OVERRIDES": {"ChannelOrGroupEnum": "notify.api.serializers.PREFERENCE_CHOICES"},
}

# API keys travel as "Authorization: Api-Key <key>" (djangorestframework-api-key's format).
API_KEY_CUSTOM_HEADER = "HTTP_AUTHORIZATION"

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

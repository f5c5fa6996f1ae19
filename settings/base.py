"""Core Django, database, cache and API settings."""

from pathlib import Path

from .env import env, env_bool, env_int

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
    "notify",
]

MIDDLEWARE = [
    "notify.api.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
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
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

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
SPECTACULAR_SETTINGS = {"TITLE": "notify API", "VERSION": "1.0.0"}

# API keys travel as "Authorization: Api-Key <key>" (djangorestframework-api-key's format).
API_KEY_CUSTOM_HEADER = "HTTP_AUTHORIZATION"

# --- Product rules --------------------------------------------------------------------------
#: Idempotency keys are remembered this long (seconds); after it the same key makes a new send.
NOTIFY_IDEMPOTENCY_RETENTION = env_int("NOTIFY_IDEMPOTENCY_RETENTION", 7 * 24 * 3600)
#: Per recipient and channel: at most this many deliveries per window (django-ratelimit syntax).
NOTIFY_RATE_LIMIT = env("NOTIFY_RATE_LIMIT", "100/h")
#: Per API key: requests per window to the send endpoint.
NOTIFY_API_RATE_LIMIT = env("NOTIFY_API_RATE_LIMIT", "100000/m")
#: Default time to live of a notification (seconds).
NOTIFY_DEFAULT_TTL = env_int("NOTIFY_DEFAULT_TTL", 24 * 3600)
#: Where SMS status callbacks and email unsubscribe links point (this service's public URL).
NOTIFY_PUBLIC_URL = env("NOTIFY_PUBLIC_URL", "http://127.0.0.1:8000")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("NOTIFY_LOG_LEVEL", "INFO")},
    # Client libraries that log every request at INFO: that is a log line per message on the
    # workers' hot path.
    "loggers": {name: {"level": env("NOTIFY_CLIENT_LOG_LEVEL", "WARNING")}
                for name in ("twilio.http_client", "httpx", "httpcore", "botocore", "urllib3", "google.auth")},
}

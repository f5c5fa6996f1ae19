"""Settings for the test suite: the same real services, kept apart from a running dev stack
(own database, RabbitMQ vhost, Redis database, sandbox ports and API port)."""

import os

os.environ.setdefault("NOTIFY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/notify_test")
os.environ.setdefault("NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/1")
os.environ.setdefault("NOTIFY_TEST_SANDBOX_PORT_BASE", "19600")
os.environ.setdefault("NOTIFY_TEST_API_PORT", "18000")
os.environ.setdefault("NOTIFY_SEND_LEASE", "6")
os.environ.setdefault("NOTIFY_SANDBOX_FALLBACK", "1")
os.environ.setdefault("NOTIFY_RATE_LIMIT", "1000/hour")  # read (and checked) by settings.base

from channels import registry  # noqa: E402

# Provider timeouts stay under the lease (a worker must never outlive its claim).
for _cls in registry.providers().values():
    for _setting in _cls.settings:
        if _setting.key == "timeout":
            os.environ.setdefault(_setting.env, "3")

# The shared settings without the production ones (HTTPS only, a secret key of its own): the
# tests' stack serves plain HTTP on 127.0.0.1, as `make run` does.
from .base import *  # noqa: E402,F401,F403
from .providers import *  # noqa: E402,F401,F403
from .base import VAR_DIR  # noqa: E402

NOTIFY_SANDBOX_DIR = os.environ.setdefault("NOTIFY_SANDBOX_DIR", str(VAR_DIR / "test-sandbox"))
NOTIFY_PUBLIC_URL = os.environ.setdefault("NOTIFY_PUBLIC_URL", f"http://127.0.0.1:{os.environ['NOTIFY_TEST_API_PORT']}")

"""Shared start-up of the benchmarks: their own database, vhost, Redis database and ports, so a
benchmark never disturbs `make run` or the tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(name: str = "bench") -> None:
    """Point settings at the benchmark's own services and run migrations."""
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
    os.environ.setdefault("NOTIFY_DB_NAME", "notify_bench")
    os.environ.setdefault("NOTIFY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/notify_bench")
    os.environ.setdefault("NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/2")
    os.environ.setdefault("NOTIFY_SANDBOX_DIR", str(ROOT / "var" / f"{name}-sandbox"))
    os.environ.setdefault("NOTIFY_PUBLIC_URL", "http://127.0.0.1:18100")
    os.environ.setdefault("NOTIFY_RATE_LIMIT", "1000000/hour")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def stack_config(name: str = "bench", concurrency: int = 2, **overrides):
    from devtools.stack import StackConfig

    return StackConfig(
        env={"NOTIFY_DB_NAME": os.environ["NOTIFY_DB_NAME"]},
        api_port=18100, sandbox_port_base=19700,
        sandbox_dir=Path(os.environ["NOTIFY_SANDBOX_DIR"]),
        log_dir=ROOT / "var" / f"{name}-log", concurrency=concurrency, flower_port=None, **overrides)


def reset_data() -> None:
    """Empty the benchmark database's notification tables and the queues of its vhost."""
    from django.db import connection

    from notify.celery import app

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE notify_deliverylog, notify_delivery, notify_notification, notify_preference, "
                       "notify_device, notify_recipient, notify_template, notify_appapikey, notify_app CASCADE")
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue.bind(conn.default_channel).declare()
            queue.bind(conn.default_channel).purge()
    from django.core.cache import cache

    cache.clear()

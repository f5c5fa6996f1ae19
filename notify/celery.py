"""The Celery application. Configuration lives in the top-level ``celeryconfig`` module."""

import os

import logging

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_shutdown
from celery.worker.consumer import Consumer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.production")

app = Celery("notify")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["notify"])


class WorkerConsumer(Consumer):
    """Celery's consumer without its native delayed delivery step (``worker_consumer``).

    With quorum queues Celery declares 28 ``celery_delayed_*`` queues and their exchanges on
    every broker URL at each (re)connection, for ETA/countdown tasks; notify publishes none (a
    delayed retry waits in PostgreSQL). Worse, the step runs before the consumer loop and tries
    every URL of a cluster's broker URL, a stopped node for about 17 s (three retries), so each
    worker stood still that long after losing its node (tests/test_quorum_cluster.py).
    """

    class Blueprint(Consumer.Blueprint):
        default_steps = [step for step in Consumer.Blueprint.default_steps if not step.endswith(":DelayedDelivery")]


@after_setup_logger.connect
def _quiet_per_task_logs(**kwargs):
    """Celery logs two INFO lines per task (received, succeeded): at millions of tasks a day
    that is work on the send path and noise in the logs. Outcomes are in the delivery log."""
    from django.conf import settings

    level = settings.NOTIFY_TASK_LOG_LEVEL
    # celery.beat: "Scheduler: Sending due task" every second for the dispatcher.
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        logging.getLogger(name).setLevel(level)
    _log_like_django(kwargs.get("logger"))


@after_setup_task_logger.connect
def _task_logs_like_django(**kwargs):
    _log_like_django(kwargs.get("logger"))


def _log_like_django(logger) -> None:
    """Celery replaces the handlers of the loggers it sets up: give its handlers the format and
    the masking filter of settings.LOGGING (JSON lines, no personal data), as the API and the
    relay have."""
    import logging.config

    from django.conf import settings

    config = settings.LOGGING
    factory = logging.config.DictConfigurator(config)
    formatter = factory.configure_formatter(dict(config["formatters"][settings.NOTIFY_LOG_FORMAT]))
    from .logmask import MaskFilter

    for handler in (logger.handlers if logger is not None else []):
        handler.setFormatter(formatter)
        if not any(isinstance(f, MaskFilter) for f in handler.filters):
            handler.addFilter(MaskFilter())


@worker_process_shutdown.connect
def _forget_process_metrics(pid=None, **kwargs):
    """A prefork child ends: drop its live-gauge files (notify.metrics; counters stay)."""
    from .metrics import mark_process_dead

    mark_process_dead(pid or os.getpid())

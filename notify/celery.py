"""The Celery application. Configuration lives in the top-level ``celeryconfig`` module."""

import os

import logging

from celery import Celery
from celery.signals import after_setup_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.production")

app = Celery("notify")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["notify"])


@after_setup_logger.connect
def _quiet_per_task_logs(**kwargs):
    """Celery logs two INFO lines per task (received, succeeded): at millions of tasks a day
    that is work on the send path and noise in the logs. Outcomes are in the delivery log."""
    from django.conf import settings

    level = settings.NOTIFY_TASK_LOG_LEVEL
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(level)

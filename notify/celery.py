"""The Celery application. Configuration lives in the top-level ``celeryconfig`` module."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

app = Celery("notify")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["notify"])

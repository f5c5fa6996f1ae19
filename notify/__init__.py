"""notify: the Django app (data model, REST API, admin) and the Celery application."""

from .celery import app as celery_app

__all__ = ["celery_app"]

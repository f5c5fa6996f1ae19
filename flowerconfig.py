"""Flower's configuration (``celery -A notify flower`` reads ``flowerconfig.py`` from the working
directory), taken from the Django settings like Celery's own (celeryconfig.py):

- ``NOTIFY_FLOWER_BASIC_AUTH`` (``user:password``): required; Flower shows task arguments and
  can stop workers, so it does not start without a login.
- ``NOTIFY_BROKER_API_URL``: RabbitMQ's management API, from which the Broker page and
  ``/api/queues/length`` show every queue (one per channel) with its depth.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if not settings.NOTIFY_FLOWER_BASIC_AUTH or ":" not in settings.NOTIFY_FLOWER_BASIC_AUTH:
    raise ImproperlyConfigured("NOTIFY_FLOWER_BASIC_AUTH must be set to user:password to start Flower")

basic_auth = [settings.NOTIFY_FLOWER_BASIC_AUTH]
broker_api = settings.NOTIFY_BROKER_API_URL

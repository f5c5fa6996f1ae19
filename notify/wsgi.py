"""WSGI entry point (gunicorn notify.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.production")
application = get_wsgi_application()

from notify.providers import check_configuration  # noqa: E402  (needs the app registry)

# The API verifies webhooks with the providers' credentials: refuse to start without them.
check_configuration()

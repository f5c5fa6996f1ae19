"""Django settings for notify, one module per way of running it:

- ``settings.base`` and ``settings.providers``: what every way of running shares.
- ``settings.production``: the default of manage.py, gunicorn and Celery. Every value comes from
  an environment variable; provider settings must be set (a missing one stops the start-up);
  HTTPS only, and a secret key of its own (the public development key stops the start-up).
- ``settings.dev``: ``make run`` and docker-compose, the provider sandbox as the embedded default.
- ``settings.test``: the test suite, on its own database, vhost, Redis database and ports.

This package imports nothing itself, so that ``settings.dev`` and ``settings.test`` can set their
environment defaults before any value is read.
"""

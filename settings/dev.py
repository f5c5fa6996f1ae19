"""Settings of ``make run`` and docker-compose: the shared settings with the provider sandbox as
the embedded default (unset provider settings come from its ``sandbox.json``), served over plain
HTTP on this machine, so without the production ones (HTTPS only, a secret key of its own).
Django's debug mode stays off unless DJANGO_DEBUG is set (``make run`` sets it: devtools.run)."""

import os

os.environ.setdefault("NOTIFY_SANDBOX_FALLBACK", "1")
# Flower asks for this login in `make run` (production: set NOTIFY_FLOWER_BASIC_AUTH).
os.environ.setdefault("NOTIFY_FLOWER_BASIC_AUTH", "notify:notify")

from .base import *  # noqa: E402,F401,F403
from .providers import *  # noqa: E402,F401,F403

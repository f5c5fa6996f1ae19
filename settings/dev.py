"""Settings of ``make run``: the production settings with the provider sandbox as the embedded
default (unset provider settings come from its ``sandbox.json``) and Django's debug mode on."""

import os

os.environ.setdefault("NOTIFY_SANDBOX_FALLBACK", "1")
os.environ.setdefault("DJANGO_DEBUG", "1")
# Flower asks for this login in `make run` (production: set NOTIFY_FLOWER_BASIC_AUTH).
os.environ.setdefault("NOTIFY_FLOWER_BASIC_AUTH", "notify:notify")

from .production import *  # noqa: E402,F401,F403

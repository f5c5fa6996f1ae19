"""Settings of ``make run``: the production settings with the provider sandbox as the embedded
default (unset provider settings come from its ``sandbox.json``) and Django's debug mode on."""

import os

os.environ.setdefault("NOTIFY_SANDBOX_FALLBACK", "1")
os.environ.setdefault("DJANGO_DEBUG", "1")

from .production import *  # noqa: E402,F401,F403

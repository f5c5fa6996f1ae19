"""Settings of the accept benchmark's API (bench/accept.py): the development settings with a URL
conf that adds the bare view it compares the send API with."""

from settings.dev import *  # noqa: F401,F403

ROOT_URLCONF = "bench.bare_urls"

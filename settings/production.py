"""The production settings: every value from an environment variable (README: Configuration).

Service addresses default to this machine; provider settings have no silent default (set them,
or use ``settings.dev`` with the provider sandbox)."""

from .base import *  # noqa: F401,F403
from .providers import *  # noqa: F401,F403

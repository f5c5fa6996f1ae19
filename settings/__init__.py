"""Django settings for notify.

Every value comes from an environment variable with a working local default, so a fresh machine
runs the whole stack against the project's provider sandbox and operators point the same code at
the real providers by setting variables only (README: Configuration).
"""

from .base import *  # noqa: F401,F403
from .providers import *  # noqa: F401,F403

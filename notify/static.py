"""Static files (the admin's styles, Swagger UI, ReDoc) and the site root's (``favicon.ico``,
``WHITENOISE_ROOT``) served by the API process itself."""

from __future__ import annotations

import os

from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, serving ``STATIC_ROOT`` when ``manage.py collectstatic`` filled it and the
    installed apps' files otherwise (``WHITENOISE_USE_FINDERS``), so gunicorn serves the admin
    styled with no collect step. Unlike WhiteNoise itself it does not warn about a
    ``STATIC_ROOT`` that was never collected."""

    def add_files(self, root, prefix=None):
        if os.path.isdir(root):
            super().add_files(root, prefix)

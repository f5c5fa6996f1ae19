"""Static files (the admin's styles, Swagger UI, ReDoc) served by the API process itself."""

from __future__ import annotations

import os
from pathlib import Path

from django.http import HttpResponse
from django.views.decorators.http import require_GET
from whitenoise.middleware import WhiteNoiseMiddleware

#: The icon every browser asks for at ``/favicon.ico`` whatever the page (SVG: Chromium, Firefox
#: and Safari take it whatever the path's extension says).
_FAVICON = (Path(__file__).parent / "static" / "notify" / "favicon.svg").read_bytes()


@require_GET
def favicon(request) -> HttpResponse:
    """``GET /favicon.ico``: the service's icon, cacheable for a day (without it every page's
    visit logs a 404, and the browser's console an error)."""
    return HttpResponse(_FAVICON, content_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, serving ``STATIC_ROOT`` when ``manage.py collectstatic`` filled it and the
    installed apps' files otherwise (``WHITENOISE_USE_FINDERS``), so gunicorn serves the admin
    styled with no collect step. Unlike WhiteNoise itself it does not warn about a
    ``STATIC_ROOT`` that was never collected."""

    def add_files(self, root, prefix=None):
        if os.path.isdir(root):
            super().add_files(root, prefix)

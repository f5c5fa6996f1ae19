"""Refuse oversized bodies with 413 before anything reads them."""

from django.conf import settings
from django.http import JsonResponse

from .errors import error_body


class BodySizeLimitMiddleware:
    """Answers 413 ``body_too_large`` when Content-Length exceeds ``NOTIFY_MAX_BODY_BYTES``
    (Django would otherwise raise RequestDataTooBig deep inside parsing, as a 400 HTML page)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.limit = settings.NOTIFY_MAX_BODY_BYTES

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.limit:
            return JsonResponse(error_body("body_too_large", f"request body is over {self.limit} bytes"), status=413)
        return self.get_response(request)

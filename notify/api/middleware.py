"""Refuse oversized bodies with 413, and bodies of unknown length with 411, before anything
reads them."""

from django.conf import settings
from django.http import JsonResponse

from .errors import error_body

#: Methods whose requests carry a body this API reads.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_chunked(request) -> bool:
    codings = request.META.get("HTTP_TRANSFER_ENCODING", "")
    return "chunked" in (coding.strip().lower() for coding in codings.split(","))


class BodySizeLimitMiddleware:
    """Answers 413 ``body_too_large`` when Content-Length exceeds ``NOTIFY_MAX_BODY_BYTES``
    (Django would otherwise raise RequestDataTooBig deep inside parsing, as a 400 HTML page),
    and 411 ``length_required`` for a POST/PUT/PATCH sent with ``Transfer-Encoding: chunked``.

    Gunicorn passes a chunked body without a Content-Length, and Django then reads it as empty:
    a PUT would apply nothing yet answer 200/201. Requiring a length also keeps the 413 check
    above meaningful (a chunked body would bypass it).
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.limit = settings.NOTIFY_MAX_BODY_BYTES

    def __call__(self, request):
        if request.method in _BODY_METHODS and _is_chunked(request):
            return JsonResponse(error_body("length_required",
                                           "send the body with a Content-Length; chunked transfer encoding "
                                           "is not supported"), status=411)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.limit:
            return JsonResponse(error_body("body_too_large", f"request body is over {self.limit} bytes"), status=413)
        return self.get_response(request)

"""Refuse oversized bodies with 413, and bodies of unknown length with 411, before anything
reads them."""

from django.conf import settings
from django.http import JsonResponse
from django.urls import Resolver404, resolve, reverse

from .errors import error_body

#: Methods whose requests carry a body this API reads.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_chunked(request) -> bool:
    codings = request.META.get("HTTP_TRANSFER_ENCODING", "")
    return "chunked" in (coding.strip().lower() for coding in codings.split(","))


class BodySizeLimitMiddleware:
    """Answers 413 ``body_too_large`` when Content-Length exceeds the endpoint's limit
    (Django would otherwise raise RequestDataTooBig deep inside parsing, as a 400 HTML page),
    and 411 ``length_required`` for a POST/PUT/PATCH sent with ``Transfer-Encoding: chunked``.

    The limit is ``NOTIFY_MAX_BODY_BYTES``, except for the batch endpoint, which carries up to
    ``NOTIFY_BATCH_MAX_ITEMS`` send bodies: ``NOTIFY_BATCH_MAX_BODY_BYTES``, the bulk endpoint:
    ``NOTIFY_BULK_MAX_BODY_BYTES``, and the webhooks a
    provider publishes through Amazon SNS, whose messages may be up to 256 KiB:
    ``NOTIFY_SNS_MAX_BODY_BYTES`` (settings.base).

    Gunicorn passes a chunked body without a Content-Length, and Django then reads it as empty:
    a PUT would apply nothing yet answer 200/201. Requiring a length also keeps the 413 check
    above meaningful (a chunked body would bypass it).
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.limit = settings.NOTIFY_MAX_BODY_BYTES
        self.batch_limit = settings.NOTIFY_BATCH_MAX_BODY_BYTES
        self.bulk_limit = settings.NOTIFY_BULK_MAX_BODY_BYTES
        self.sns_limit = settings.NOTIFY_SNS_MAX_BODY_BYTES

    def limit_for(self, request) -> int:
        """Bytes of body the endpoint of ``request`` takes (``reverse`` includes the script
        prefix of this request, as ``request.path`` does)."""
        if request.path == reverse("notifications-batch"):
            return self.batch_limit
        if request.path == reverse("notifications-bulk"):
            return self.bulk_limit
        from notify.webhooks.sns import carries_sns  # the webhooks import the models

        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.limit
        if match.url_name == "webhook" and carries_sns(match.kwargs["provider"], match.kwargs["kind"]):
            return self.sns_limit
        return self.limit

    def __call__(self, request):
        if request.method in _BODY_METHODS and _is_chunked(request):
            return JsonResponse(error_body("length_required",
                                           "send the body with a Content-Length; chunked transfer encoding "
                                           "is not supported"), status=411)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        # The endpoint is looked up only for a body over the common limit (rare, and small next to
        # reading it).
        limit = self.limit if length <= self.limit else self.limit_for(request)
        if length > limit:
            return JsonResponse(error_body("body_too_large", f"request body is over {limit} bytes"), status=413)
        return self.get_response(request)

"""One base view for provider webhooks: verify the signature, then let the provider's parser
dispatch. A bad signature is a 400 (the provider must not retry forged calls); a transient
failure of ours is a 5xx so the provider retries."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from ..api.errors import error_body


@method_decorator(csrf_exempt, name="dispatch")
class WebhookView(View):
    """Subclasses implement ``verify(request, url) -> bool`` and ``handle(request)``."""

    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        # Providers sign the public URL they called, which a proxy may rewrite: rebuild it from
        # the configured public base.
        url = settings.NOTIFY_PUBLIC_URL.rstrip("/") + request.get_full_path()
        if not self.verify(request, url):
            return JsonResponse(error_body("invalid_signature", "webhook signature does not verify"), status=400)
        self.handle(request)
        return HttpResponse(status=204)

    def verify(self, request, url: str) -> bool:
        raise NotImplementedError

    def handle(self, request) -> None:
        raise NotImplementedError

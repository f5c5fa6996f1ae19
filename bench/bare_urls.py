"""The service's URLs plus ``POST /bench/bare``: a bare DRF view that validates a send body with
the send API's own serializer and writes nothing, the reference of bench/accept.py."""

from django.urls import include, path
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from notify.api.serializers import SendSerializer


class BareSendView(APIView):
    """Parse and validate a send body; no authentication, no look-up, nothing written."""

    authentication_classes: list = []
    permission_classes: list = []

    def post(self, request):
        serializer = SendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response({"valid": True}, status=status.HTTP_202_ACCEPTED)


urlpatterns = [
    path("bench/bare", BareSendView.as_view()),
    path("", include("notify.urls")),
]

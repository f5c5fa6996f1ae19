from django.urls import path

from . import twilio

urlpatterns = [
    path("twilio/status", twilio.TwilioStatusView.as_view(), name="twilio-status"),
    path("twilio/inbound", twilio.TwilioInboundView.as_view(), name="twilio-inbound"),
]

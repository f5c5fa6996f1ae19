from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from . import views

urlpatterns = [
    path("notifications", views.NotificationListView.as_view(), name="notifications"),
    path("notifications/batch", views.NotificationBatchView.as_view(), name="notifications-batch"),
    path("notifications/<uuid:notification_id>", views.NotificationDetailView.as_view(), name="notification"),
    path("recipients/<str:external_id>", views.RecipientView.as_view(), name="recipient"),
    path("recipients/<str:external_id>/devices", views.DeviceListView.as_view(), name="devices"),
    path("recipients/<str:external_id>/devices/<int:device_id>", views.DeviceDetailView.as_view(), name="device"),
    path("recipients/<str:external_id>/preferences", views.PreferenceView.as_view(), name="preferences"),
    path("schema", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="schema"),
]

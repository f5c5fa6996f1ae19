from django.contrib import admin
from django.urls import include, path

from .unsubscribe import unsubscribe

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("notify.api.urls")),
    path("webhooks/", include("notify.webhooks.urls")),
    path("unsubscribe/<str:token>", unsubscribe, name="unsubscribe"),
]

handler404 = "notify.api.errors.json_404"
handler500 = "notify.api.errors.json_500"

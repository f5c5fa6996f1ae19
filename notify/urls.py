from django.contrib import admin
from django.urls import include, path
from oauth2_provider import views as oauth_views

from . import health, monitoring, preferences, tracking_views
from .unsubscribe import unsubscribe

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/live", health.LiveView.as_view(), name="health-live"),
    path("health/ready", health.ReadyView.as_view(), name="health-ready"),
    # The names Kubernetes' examples and many probes assume; the same views.
    path("healthz", health.LiveView.as_view(), name="healthz"),
    path("readyz", health.ReadyView.as_view(), name="readyz"),
    path("metrics", monitoring.metrics_view, name="metrics"),
    path("ops/dashboard", monitoring.dashboard, name="ops-dashboard"),
    path("ops/dashboard/data", monitoring.dashboard_data, name="ops-dashboard-data"),
    path("api/v1/", include("notify.api.urls")),
    # OAuth2 client credentials (notify.oauth): django-oauth-toolkit's token and revocation
    # endpoints only (RFC 6749 4.4, RFC 7009), no authorization or application pages.
    path("oauth/token/", oauth_views.TokenView.as_view(), name="oauth-token"),
    path("oauth/revoke_token/", oauth_views.RevokeTokenView.as_view(), name="oauth-revoke-token"),
    path("webhooks/", include("notify.webhooks.urls")),
    path("unsubscribe/<str:token>", unsubscribe, name="unsubscribe"),
    path("preferences/<str:token>", preferences.page, name="preference-page"),
    path("t/o/<str:token>.gif", tracking_views.open_pixel, name="track-open"),
    path("t/c/<str:token>", tracking_views.click, name="track-click"),
    path("t/p/<str:token>", tracking_views.push_open, name="track-push-open"),
]

handler404 = "notify.api.errors.json_404"
handler500 = "notify.api.errors.json_500"

from django.urls import path

from . import analytics, categories, credentials, deliveries, root, templates, views

urlpatterns = [
    path("notifications", views.NotificationListView.as_view(), name="notifications"),
    path("notifications/batch", views.NotificationBatchView.as_view(), name="notifications-batch"),
    path("notifications/<uuid:notification_id>", views.NotificationDetailView.as_view(), name="notification"),
    path("deliveries/<uuid:delivery_id>/opened", deliveries.DeliveryOpenedView.as_view(), name="delivery-opened"),
    path("recipients/<str:external_id>", views.RecipientView.as_view(), name="recipient"),
    path("recipients/<str:external_id>/erase", views.RecipientEraseView.as_view(), name="recipient-erase"),
    path("recipients/<str:external_id>/devices", views.DeviceListView.as_view(), name="devices"),
    path("recipients/<str:external_id>/devices/<int:device_id>", views.DeviceDetailView.as_view(), name="device"),
    path("recipients/<str:external_id>/preferences", views.PreferenceView.as_view(), name="preferences"),
    path("recipients/<str:external_id>/preference-link", views.PreferenceLinkView.as_view(), name="preference-link"),
    path("categories", categories.CategoryListView.as_view(), name="categories"),
    path("categories/<str:name>", categories.CategoryDetailView.as_view(), name="category"),
    path("templates", templates.TemplateListView.as_view(), name="templates"),
    path("templates/<slug:name>", templates.TemplateDetailView.as_view(), name="template"),
    path("templates/<slug:name>/versions", templates.TemplateVersionListView.as_view(), name="template-versions"),
    path("templates/<slug:name>/versions/<int:number>", templates.TemplateVersionDetailView.as_view(),
         name="template-version"),
    path("templates/<slug:name>/versions/<int:number>/publish", templates.TemplateVersionPublishView.as_view(),
         name="template-version-publish"),
    path("templates/<slug:name>/preview", templates.TemplatePreviewView.as_view(), name="template-preview"),
    path("analytics", analytics.AnalyticsView.as_view(), name="analytics"),
    path("credentials", credentials.CredentialsListView.as_view(), name="credentials"),
    path("credentials/<str:provider>", credentials.CredentialsDetailView.as_view(), name="credential"),
    path("", root.ApiRootView.as_view(), name="api-root"),
    path("schema", root.SchemaView.as_view(), name="schema"),
    path("docs", root.SwaggerView.as_view(), name="docs"),
    path("redoc", root.RedocView.as_view(), name="redoc"),
]

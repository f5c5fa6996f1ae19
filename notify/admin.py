"""Django admin: apps and keys, recipients with devices and preferences (opt-outs), templates,
read-only notifications and deliveries, and dead-letter replay."""

from django.contrib import admin, messages
from rest_framework_api_key.admin import APIKeyModelAdmin

from . import deadletters
from .models import App, AppAPIKey, Delivery, DeliveryLog, Device, Notification, Preference, Recipient, Template, \
    TemplateVersion


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]


@admin.register(AppAPIKey)
class AppAPIKeyAdmin(APIKeyModelAdmin):
    list_display = [*APIKeyModelAdmin.list_display, "app"]


class DeviceInline(admin.TabularInline):
    model = Device
    fields = ["platform", "token", "active", "deactivated_reason", "last_seen_at"]
    readonly_fields = ["last_seen_at"]
    extra = 0


class PreferenceInline(admin.TabularInline):
    model = Preference
    fields = ["channel", "category", "enabled", "source"]
    extra = 0


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = ["external_id", "app", "name", "email", "phone", "locale"]
    list_filter = ["app"]
    search_fields = ["external_id", "email", "phone"]
    inlines = [DeviceInline, PreferenceInline]


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin):
    list_display = ["recipient", "channel", "category", "enabled", "source", "updated_at"]
    list_filter = ["channel", "enabled", "source"]
    search_fields = ["recipient__external_id"]


class TemplateVersionInline(admin.StackedInline):
    model = TemplateVersion
    fields = ["number", "content", "variants", "published_at"]
    extra = 0

    def get_readonly_fields(self, request, obj=None):
        # A published version never changes: editing means adding a new version.
        return ["number", "content", "variants", "published_at"] if obj else []


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "app", "category", "default_locale", "archived_at", "updated_at"]
    list_filter = ["app", "category"]
    inlines = [TemplateVersionInline]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ["channel", "address", "status", "reason", "attempts", "provider_message_id", "sent_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "app", "recipient", "category", "priority", "created_at"]
    list_filter = ["app", "category"]
    search_fields = ["id", "idempotency_key", "recipient__external_id"]
    inlines = [DeliveryInline]


class DeliveryLogInline(admin.TabularInline):
    model = DeliveryLog
    fields = ["at", "from_status", "to_status", "attempt", "reason", "provider_status", "duration_ms"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "status", "reason", "attempts", "created_at", "sent_at"]
    list_filter = ["channel", "status"]
    search_fields = ["id", "provider_message_id", "address"]
    inlines = [DeliveryLogInline]
    actions = ["replay_dead_letters"]

    @admin.action(description="Replay selected dead-lettered deliveries")
    def replay_dead_letters(self, request, queryset):
        count = deadletters.replay([str(i) for i in queryset.values_list("id", flat=True)])
        self.message_user(request, f"{count} dead-lettered deliveries replayed", messages.SUCCESS)

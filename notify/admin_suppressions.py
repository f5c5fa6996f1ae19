"""The admin of address suppressions (notify.models.AddressSuppression): what bounced or
complained, when and through which delivery; deleting one lets the address receive again."""

from __future__ import annotations

from django.contrib import admin

from . import store
from .models import AddressSuppression


@admin.register(AddressSuppression)
class AddressSuppressionAdmin(admin.ModelAdmin):
    """Read-only rows (a provider's event makes them); an operator may delete them, which clears
    the cached profiles of every recipient at the address so the next send goes out."""

    list_display = ("address", "channel", "reason", "app", "created_at", "delivery_id")
    list_filter = ("reason", "channel", "app")
    search_fields = ("address",)
    readonly_fields = ("app", "channel", "address", "reason", "delivery_id", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj: AddressSuppression) -> None:
        super().delete_model(request, obj)
        store.forget_address_holders(obj.app_id, obj.address)

    def delete_queryset(self, request, queryset) -> None:
        rows = list(queryset.values_list("app_id", "address"))
        super().delete_queryset(request, queryset)
        for app_id, address in rows:
            store.forget_address_holders(app_id, address)

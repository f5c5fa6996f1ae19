"""The admin of broadcasts (notify.models.Broadcast): each one's segment and progress (recipients
written, deliveries queued, sent, failed, suppressed, cancelled, pending), and an action to
cancel what they have not sent. Broadcasts are started through the API (POST
/api/v1/broadcasts), not here."""

from __future__ import annotations

import dataclasses

from django.contrib import admin, messages

from . import broadcast as fan
from .models import Broadcast

#: Every counter of notify.broadcast.Progress, as the API shows them (its status is the row's own).
PROGRESS = tuple(f.name for f in dataclasses.fields(fan.Progress) if f.name != "status")


def _progress_column(name: str):
    def column(self, obj: Broadcast) -> int:
        return getattr(self._progress(obj), name)

    column.short_description = name
    column.__name__ = f"progress_{name}"
    return column


#: A column method per counter (``progress_sent``, ...), named as list_display names them.
_ProgressColumns = type("_ProgressColumns", (), {f"progress_{name}": _progress_column(name) for name in PROGRESS})


@admin.register(Broadcast)
class BroadcastAdmin(_ProgressColumns, admin.ModelAdmin):
    """Read-only rows with their progress (notify.broadcast.progress, one GROUP BY per row
    shown); the ``cancel`` action stops the fan-out and cancels what was not sent yet."""

    list_display = ("id", "app", "template", "template_version", "status",
                    *(f"progress_{name}" for name in PROGRESS), "created_at")
    list_filter = ("status", "app")
    readonly_fields = ("app", "template", "template_version", "category", "priority", "channels", "segment", "data",
                       "status", *(f"progress_{name}" for name in PROGRESS), "cursor", "created_at",
                       "progressed_at", "finished_at", "cancelled_at")
    fields = readonly_fields
    actions = ["cancel_broadcasts"]

    def _progress(self, obj: Broadcast) -> fan.Progress:
        # Each column of a row reads the same progress: one query per row, not per column.
        cached = getattr(obj, "_admin_progress", None)
        if cached is None:
            cached = obj._admin_progress = fan.progress(obj)
        return cached

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Cancel selected broadcasts (stop the fan-out, cancel unsent deliveries)")
    def cancel_broadcasts(self, request, queryset):
        stopped = cancelled = 0
        for app_id, broadcast_id in queryset.values_list("app_id", "id"):
            count = fan.cancel(app_id, broadcast_id)
            if count is not None:
                stopped += 1
                cancelled += count
        self.message_user(request, f"{stopped} broadcasts cancelled, {cancelled} deliveries cancelled",
                          messages.SUCCESS if stopped else messages.WARNING)

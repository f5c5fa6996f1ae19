"""The notify data model: apps and API keys, categories, recipients and their devices and preferences,
templates, notifications with their deliveries and the delivery log, and the analytics' daily counts."""

from .analytics import EVENT_METRICS, AnalyticsWatermark, DailyStat, Metric
from .apps import App, AppAPIKey
from .broadcasts import Broadcast, BroadcastStatus
from .categories import Category
from .credentials import ProviderCredential
from .oauth import OAuthClient
from .recipients import Device, Preference, Recipient
from .suppressions import AddressSuppression, SuppressionReason
from .templates import Template, TemplateVersion
from .notifications import (FINAL_STATUSES, OUTCOME_UNKNOWN, REACHED_PROVIDER, RECEIPT_RANK, Delivery, DeliveryEvent,
                            DeliveryLog, DeliveryStatus, EventKind, Notification, OutboxBatch, cannot_deliver)

__all__ = [
    "AddressSuppression", "Broadcast", "BroadcastStatus", "SuppressionReason", "AnalyticsWatermark", "DailyStat", "EVENT_METRICS", "Metric", "App", "AppAPIKey", "Category", "Device", "OAuthClient", "ProviderCredential", "Preference", "Recipient", "Template", "TemplateVersion",
    "Delivery", "DeliveryEvent", "DeliveryLog", "DeliveryStatus", "EventKind", "FINAL_STATUSES", "Notification", "OutboxBatch",
    "OUTCOME_UNKNOWN", "REACHED_PROVIDER", "RECEIPT_RANK", "cannot_deliver",
]

"""The notify data model: apps and API keys, categories, recipients and their devices and preferences,
templates, notifications with their deliveries and the delivery log."""

from .apps import App, AppAPIKey
from .categories import Category
from .recipients import Device, Preference, Recipient
from .templates import Template, TemplateVersion
from .notifications import FINAL_STATUSES, Delivery, DeliveryLog, DeliveryStatus, Notification

__all__ = [
    "App", "AppAPIKey", "Category", "Device", "Preference", "Recipient", "Template", "TemplateVersion",
    "Delivery", "DeliveryLog", "DeliveryStatus", "FINAL_STATUSES", "Notification",
]

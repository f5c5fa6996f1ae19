import uuid

from django.db import models


class DeliveryStatus(models.TextChoices):
    """Where a delivery stands. ``queued → sending → sent | retrying | failed | expired |
    dead_lettered``; ``retrying → queued`` when due; ``suppressed`` never leaves the API;
    an operator's replay moves ``dead_lettered → queued``."""

    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"
    #: Held until ``next_attempt_at`` (a ``send_at``, quiet hours): the dispatcher moves it to
    #: ``queued`` when due (notify.store.move_due); a cancel moves it to ``cancelled``.
    SCHEDULED = "scheduled"
    #: A later step of a notification's fallback, waiting: ``queued`` when every delivery of the
    #: steps before ended without one being sent, ``suppressed`` (``fallback_not_needed``) when
    #: one was sent (notify.store.advance_fallback).
    STANDBY = "standby"


#: Statuses a delivery does not leave by itself.
FINAL_STATUSES = frozenset({DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.EXPIRED,
                            DeliveryStatus.SUPPRESSED, DeliveryStatus.DEAD_LETTERED,
                            DeliveryStatus.CANCELLED})


class Notification(models.Model):
    """One send request of a calling product to one recipient.

    ``idempotency_key`` (the ``Idempotency-Key`` header or ``event_id``) is unique per app while
    it is retained; ``request_hash`` tells a replay of the same request from a different one, and
    ``response`` is the exact 202 body so a replay answers identically.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    app = models.ForeignKey("notify.App", on_delete=models.PROTECT, related_name="notifications")
    api_key = models.ForeignKey("notify.AppAPIKey", on_delete=models.SET_NULL, null=True, related_name="+")
    recipient = models.ForeignKey("notify.Recipient", on_delete=models.PROTECT, related_name="notifications")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64)
    category = models.CharField(max_length=64, default="general")
    template = models.ForeignKey("notify.Template", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    template_version = models.PositiveIntegerField(null=True, blank=True)
    locale = models.CharField(max_length=35, blank=True, default="")  # the template locale used
    data = models.JSONField(default=dict, blank=True)
    content = models.JSONField()  # rendered, per channel group: push / sms / email
    priority = models.CharField(max_length=8, default="normal")
    ttl = models.PositiveIntegerField()  # seconds
    expires_at = models.DateTimeField()
    send_at = models.DateTimeField(null=True, blank=True)  # scheduled by the caller
    #: The fallback order: a list of steps, each a list of channels (``[["apns", "fcm"], ["sms"]]``);
    #: empty without a fallback. Delivery.step is the index.
    fallback = models.JSONField(default=list, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    response = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "idempotency_key"], name="notification_idempotency_key",
                                    condition=models.Q(idempotency_key__isnull=False)),
        ]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"notification {self.id}"


class Delivery(models.Model):
    """One notification on one channel to one device or address."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16)  # a channel of channels.registry
    provider = models.CharField(max_length=32, blank=True)  # who sent it (notify.providers)
    variant = models.CharField(max_length=32, blank=True, default="")  # the template's A/B variant
    step = models.PositiveSmallIntegerField(default=0)  # its place in the notification's fallback
    device = models.ForeignKey("notify.Device", on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries")
    address = models.TextField(blank=True)  # token / endpoint / E.164 / email, as sent
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    reason = models.CharField(max_length=128, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    provider_message_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    unknown_outcome = models.BooleanField(default=False)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [
            # The dispatcher's sweeps touch only unfinished rows.
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due",
                         condition=models.Q(status__in=["queued", "retrying", "sending", "scheduled"])),
            # The outbox relay's look-up: queued and not yet published, oldest first.
            models.Index(fields=["created_at"], name="delivery_outbox",
                         condition=models.Q(status="queued", published_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.status}{f' ({self.reason})' if self.reason else ''} · {self.id}"


class DeliveryLog(models.Model):
    """One state transition of a delivery, with the provider's answer when there was one."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="log")
    at = models.DateTimeField(auto_now_add=True)
    from_status = models.CharField(max_length=16)
    to_status = models.CharField(max_length=16)
    attempt = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=128, blank=True)
    provider_status = models.PositiveIntegerField(null=True, blank=True)
    provider_answer = models.JSONField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["delivery", "at"])]

    def __str__(self) -> str:
        at = f"{self.at:%Y-%m-%d %H:%M:%S}" if self.at else "-"
        detail = ", ".join(x for x in (self.reason, f"HTTP {self.provider_status}" if self.provider_status else "") if x)
        return f"{at} {self.from_status} → {self.to_status} (attempt {self.attempt}{', ' + detail if detail else ''})"

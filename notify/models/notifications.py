import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models

from .suppressions import SuppressionReason


class DeliveryStatus(models.TextChoices):
    """Where a delivery stands. ``queued → sending → sent | retrying | failed | expired |
    dead_lettered``; ``retrying → queued`` when due; ``suppressed`` never leaves the API;
    an operator's replay moves ``dead_lettered → queued``. After ``sent``, what the provider or
    the recipient reports later moves it up :data:`RECEIPT_RANK` only."""

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
    #: steps before ended showing its channel cannot deliver (:func:`cannot_deliver`),
    #: ``suppressed`` (``fallback_not_needed``) when one was sent, or (``fallback_stopped``)
    #: when one ended otherwise, e.g. expired (notify.store.advance_fallback).
    STANDBY = "standby"
    #: Reported after ``sent`` (delivery events): the provider handed it over to the device,
    #: handset or mailbox; could not (an SMS carrier's ``undelivered``, an email bounce); the
    #: recipient marked it as spam; opened it; followed a link of it.
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"


#: The statuses of a delivery its provider accepted, ranked: a delivery event moves a delivery
#: only to a higher rank, so a late ``sent`` callback after ``delivered``, or an open reported
#: after the click, changes nothing (notify.store.record_delivery_event).
RECEIPT_RANK = {
    DeliveryStatus.SENT: 0, DeliveryStatus.DELIVERED: 1, DeliveryStatus.UNDELIVERED: 2,
    DeliveryStatus.BOUNCED: 2, DeliveryStatus.OPENED: 3, DeliveryStatus.CLICKED: 4,
    DeliveryStatus.COMPLAINED: 5,
}
#: Statuses of a delivery its provider accepted (``sent`` or any later report).
REACHED_PROVIDER = frozenset(RECEIPT_RANK)

#: Statuses a delivery does not leave by itself.
FINAL_STATUSES = REACHED_PROVIDER | {DeliveryStatus.FAILED, DeliveryStatus.EXPIRED, DeliveryStatus.SUPPRESSED,
                                     DeliveryStatus.DEAD_LETTERED, DeliveryStatus.CANCELLED}

#: Suppression reasons that mean the channel cannot reach the recipient at all (no address or
#: device, the recipient refused it, the address is suppressed): a fallback moves on past them.
UNREACHABLE_REASONS = frozenset({"no_device", "no_address", "device_removed", "opted_out", *SuppressionReason.values})
#: The prefix of a failure's reason when the provider may have delivered it after all.
OUTCOME_UNKNOWN = "outcome_unknown"


def cannot_deliver(status: str, reason: str) -> bool:
    """Whether a delivery that ended in ``status`` (with ``reason``) shows that its channel cannot
    deliver, so that a fallback's next step may go: suppressed because there is no address,
    device or consent, or a permanent failure (a dead token, an invalid address, the provider's
    refusal). Not for an expired, cancelled, muted or rate-limited delivery (the moment or the
    recipient's own limits said no, not the channel), a dead letter (an operator may replay it),
    or a failure whose outcome is unknown (it may have been delivered): sending on another
    channel then could reach the recipient twice or against their wishes."""
    if status == DeliveryStatus.SUPPRESSED:
        return reason in UNREACHABLE_REASONS
    return status == DeliveryStatus.FAILED and not reason.startswith(OUTCOME_UNKNOWN)


class EventKind(models.TextChoices):
    """What a delivery event reports: a receipt status of :data:`RECEIPT_RANK`, or that the
    recipient unsubscribed through it (which moves no status)."""

    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"


class Notification(models.Model):
    """One send request of a calling product to one recipient.

    ``idempotency_key`` (the ``Idempotency-Key`` header or ``event_id``) is unique per app while
    it is retained; ``request_hash`` tells a replay of the same request from a different one, and
    ``response`` is the exact 202 body so a replay answers identically.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # app, api_key, template and broadcast: the same parent row for every notification an app
    # sends at once, so they carry no database constraint (their on_delete is Django's, and each
    # value is taken from a row that exists when the notification is written: the caller's key,
    # the template it loaded, the broadcast being fanned out). A PostgreSQL foreign key checks
    # each inserted row with a lookup that locks the parent row FOR KEY SHARE; concurrent
    # transactions locking one row share it through a MultiXact, and the checks were 40% of a
    # broadcast's fan-out with the relay beside it (bench/broadcast.py: 11,500-13,700 → 15,100
    # recipients/s). recipient keeps its constraint: a different row per notification, and the
    # guard that an erasure leaves no notification behind.
    app = models.ForeignKey("notify.App", on_delete=models.PROTECT, related_name="notifications",
                            db_constraint=False)
    api_key = models.ForeignKey("notify.AppAPIKey", on_delete=models.SET_NULL, null=True, related_name="+",
                                db_constraint=False)
    recipient = models.ForeignKey("notify.Recipient", on_delete=models.PROTECT, related_name="notifications")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64)
    category = models.CharField(max_length=64, default="general")
    template = models.ForeignKey("notify.Template", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                 db_constraint=False)
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
    #: The broadcast that wrote it (notify.broadcast), if any.
    broadcast = models.ForeignKey("notify.Broadcast", on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="notifications", db_index=True, db_constraint=False)
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
    """One notification on one channel to one device or address.

    The table is partitioned by UTC day of ``created_at`` (notify.partitions); its database
    primary key is ``(id, created_at)``, Django's is ``id``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # notification and device carry no database constraint (migration 0018), as the log's and
    # the events' references to a delivery do not: their on_delete is Django's, every writer
    # takes the value from a row it has in hand (the notification inserted in the same statement
    # or transaction, the device it just looked up), and the raw deletes clear references first
    # (erasure nulls device_id before deleting devices; retention deletes a notification only
    # once no delivery of it is left). Each check was a lookup locking the parent row FOR KEY
    # SHARE per delivery inserted: about a fifth of a broadcast's database time
    # (bench/broadcast.py, docs/scaling.md). The recipient's constraint on the notification stays.
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries",
                                     db_constraint=False)
    channel = models.CharField(max_length=16)  # a channel of channels.registry
    provider = models.CharField(max_length=32, blank=True)  # who sent it (notify.providers)
    variant = models.CharField(max_length=32, blank=True, default="")  # the template's A/B variant
    step = models.PositiveSmallIntegerField(default=0)  # its place in the notification's fallback
    device = models.ForeignKey("notify.Device", on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries",
                               db_constraint=False)
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


class OutboxBatch(models.Model):
    """Deliveries of one channel written together by a broadcast's fan-out, waiting for the
    outbox relay as one row (notify.outbox).

    A delivery the API writes waits in the outbox as itself (``queued``, ``published_at``
    NULL), and the relay marks it published: an UPDATE of the delivery row. A broadcast writes
    its deliveries already marked published together with one of these rows per channel, in
    the same statement; the relay publishes the ids and deletes the row in one transaction. Per
    delivery, the broadcast so pays no second write of its row (a new row version with every
    index entry again). ``published_at`` then says when the delivery was handed to the relay,
    which is what the dispatcher's sweep of messages the broker lost
    (``NOTIFY_REPUBLISH_STALE_AFTER``) reads. A cancelled broadcast's rows are deleted with the
    cancel, so the relay publishes none of its deliveries afterwards."""

    id = models.BigAutoField(primary_key=True)
    channel = models.CharField(max_length=16)  # a channel of channels.registry
    delivery_ids = ArrayField(models.UUIDField())  # ids of queued deliveries, in id order
    # The broadcast that wrote it: cancelling that broadcast deletes the rows still waiting
    # (notify.store.cancel_broadcast). No index: rows live until the next relay round, so the
    # table stays small, and a cancel's scan of it is cheaper than an index entry per batch. No
    # database constraint, as for Notification.broadcast: the broadcast's row is the one its
    # fan-out lanes update, and a check would lock it FOR KEY SHARE from every lane.
    broadcast = models.ForeignKey("notify.Broadcast", null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="+", db_index=False, db_constraint=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "outbox batches"

    def __str__(self) -> str:
        return f"{self.channel} × {len(self.delivery_ids)} · {self.id}"


class DeliveryLog(models.Model):
    """One state transition of a delivery, with the provider's answer when there was one.

    The table is partitioned by UTC day of ``at`` (notify.partitions); its database primary key
    is ``(id, at)``, Django's is ``id``."""

    # No foreign key in the database: notify_delivery is partitioned (notify.partitions), its id
    # unique only with created_at. No index on delivery alone: (delivery, at) below serves.
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="log", db_constraint=False,
                                 db_index=False)
    at = models.DateTimeField(auto_now_add=True)
    from_status = models.CharField(max_length=16)
    to_status = models.CharField(max_length=16)
    attempt = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=128, blank=True)
    provider_status = models.PositiveIntegerField(null=True, blank=True)
    provider_answer = models.JSONField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["delivery", "at"]),
            # The analytics rollup reads the rows newer than its watermark. A B-tree: rows come in
            # ``at`` order, so its inserts go to the rightmost page (PostgreSQL's fast path);
            # a BRIN index, cheaper still, was passed over by the planner as soon as the rows'
            # physical order strayed from ``at`` (it then scanned the (delivery, at) index whole).
            models.Index(fields=["at"], name="deliverylog_at"),
        ]

    def __str__(self) -> str:
        at = f"{self.at:%Y-%m-%d %H:%M:%S}" if self.at else "-"
        detail = ", ".join(x for x in (self.reason, f"HTTP {self.provider_status}" if self.provider_status else "") if x)
        return f"{at} {self.from_status} → {self.to_status} (attempt {self.attempt}{', ' + detail if detail else ''})"


class DeliveryEvent(models.Model):
    """What the provider or the recipient reported about a sent delivery, once per kind.

    ``occurred_at`` is the provider's time of the event (the order events are applied in),
    ``received_at`` ours. ``reason`` carries the provider's error code or bounce type
    (``21614``, ``Permanent:General``); ``data`` the event as received, personal data masked.
    """

    # No foreign key in the database: notify_delivery is partitioned (notify.partitions).
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events", db_constraint=False)
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=128, blank=True)
    data = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["delivery", "kind"], name="delivery_event_once")]
        indexes = [models.Index(fields=["received_at"])]

    def __str__(self) -> str:
        return f"{self.kind}{f' ({self.reason})' if self.reason else ''} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"

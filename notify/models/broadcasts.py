from django.db import models


class BroadcastStatus(models.TextChoices):
    """Where a broadcast's fan-out stands: ``created → running → done``; ``cancelled`` from any of
    the three (from ``done`` while deliveries are still unsent)."""

    CREATED = "created"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class Broadcast(models.Model):
    """One template sent to a segment of an app's recipients, fanned out in batches by background
    tasks (notify.broadcast).

    ``segment`` shape (at least one key; ``all`` excludes the others)::

        {"locale": "ko", "tags": ["beta", "vip"], "tags_match": "any" | "all",
         "external_ids": ["u1", "u2"], "all": true}

    The given filters are ANDed. ``cursor`` is the id of the last recipient fanned out (keyset:
    recipients are taken in id order), advanced in the same transaction as the batch's rows, so a
    batch is committed with its cursor or not at all. ``total`` is the segment's size counted at
    creation; ``written`` the notifications written, ``queued`` their deliveries put in the outbox,
    ``suppressed_at_fanout`` the deliveries written ``suppressed`` (opted out at fan-out).
    ``content`` is the template rendered once per locale (and variant) at creation.
    """

    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="broadcasts")
    template = models.ForeignKey("notify.Template", on_delete=models.PROTECT, related_name="+")
    template_version = models.PositiveIntegerField()
    data = models.JSONField(default=dict, blank=True)
    content = models.JSONField(default=dict, blank=True)
    category = models.CharField(max_length=64, default="general")
    priority = models.CharField(max_length=8, default="normal")
    channels = models.JSONField(default=list, blank=True)
    ttl = models.PositiveIntegerField()
    segment = models.JSONField()
    status = models.CharField(max_length=16, choices=BroadcastStatus.choices, default=BroadcastStatus.CREATED)
    total = models.PositiveIntegerField(default=0)
    written = models.PositiveIntegerField(default=0)
    queued = models.PositiveIntegerField(default=0)
    suppressed_at_fanout = models.PositiveIntegerField(default=0)
    cursor = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    progressed_at = models.DateTimeField(null=True, blank=True)  # the last batch's commit
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    #: The creating request's ``Idempotency-Key`` (unique per app while the row exists) and the
    #: SHA-256 of its body (notify.accept.request_hash): a retry answers this broadcast.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["status", "progressed_at"], name="broadcast_running",
                                condition=models.Q(status__in=["created", "running"]))]
        constraints = [
            models.UniqueConstraint(fields=["app", "idempotency_key"], name="broadcast_idempotency_key",
                                    condition=models.Q(idempotency_key__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"broadcast {self.id} ({self.status})"

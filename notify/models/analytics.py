import datetime

from django.db import models

#: The watermark's start: before any row of notify (nothing is older), and representable in
#: Python (PostgreSQL's ``-infinity`` is not).
BEGINNING = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class Metric(models.TextChoices):
    """What the analytics count, per delivery, from what notify records anyway (the rollup's SQL
    in notify.store reads them; README "Analytics" says how each is counted):

    - ``accepted``: the delivery was taken (queued, scheduled, standby or retrying at accept);
      ``suppressed`` at accept instead (an opt-out, a rate limit), or later (at send time, a
      fallback step not needed);
    - ``sent``, ``failed`` (failed, dead-lettered or expired), ``cancelled``: the delivery log's
      rows into those statuses; ``replayed``: an operator's replay of a dead letter (whose next
      attempt is counted again as sent or failed);
    - ``delivered`` … ``unsubscribed``: the delivery events, each once per delivery.
    """

    ACCEPTED = "accepted"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    REPLAYED = "replayed"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"


#: The metrics counted from delivery events, by the event's kind (a provider's own ``sent``
#: report is not one: ``sent`` is the worker's outcome).
EVENT_METRICS = (Metric.DELIVERED, Metric.UNDELIVERED, Metric.BOUNCED, Metric.COMPLAINED, Metric.OPENED,
                 Metric.CLICKED, Metric.UNSUBSCRIBED)


class DailyStat(models.Model):
    """One count of the analytics: how many deliveries of an app's notifications accepted on
    ``day`` (UTC), by template, version, A/B variant and channel, reached ``metric``.

    Kept incrementally by the rollup (notify.analytics.rollup, the SQL in notify.store) and
    never written otherwise. ``template_id`` 0 is a send with content given in the call (or
    whose template was deleted before it was rolled up), ``template_version`` 0 likewise;
    ``variant`` is empty without an A/B test. ``metric`` is a :class:`Metric`.
    """

    # No index of its own: the unique key below starts with it.
    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    # Not a foreign key: the counts outlive a deleted template (their name is then unknown).
    template_id = models.BigIntegerField(default=0)
    template_version = models.PositiveIntegerField(default=0)
    variant = models.CharField(max_length=32, blank=True, default="")
    channel = models.CharField(max_length=16)
    metric = models.CharField(max_length=16, choices=Metric.choices)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # The rollup's upsert key; also the reads' index (app, then a range of days).
            models.UniqueConstraint(fields=["app", "day", "template_id", "template_version", "variant", "channel",
                                            "metric"], name="daily_stat_key"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.channel} {self.metric}={self.count}"


class AnalyticsWatermark(models.Model):
    """How far the rollup has counted: every delivery-log row, delivery event and notification
    stamped before ``upto`` is in :class:`DailyStat`, none stamped at or after it. One row per
    rollup (``name``); the rollup locks it, so two rollups never count the same rows."""

    name = models.CharField(max_length=32, primary_key=True)
    upto = models.DateTimeField(default=BEGINNING)
    rolled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} up to {self.upto:%Y-%m-%d %H:%M:%S}"

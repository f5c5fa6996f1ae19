from django.db import models


class SuppressionReason(models.TextChoices):
    """Why an address is suppressed (:class:`AddressSuppression`)."""

    HARD_BOUNCE = "hard_bounce"  # a permanent bounce: the mailbox does not exist
    COMPLAINT = "complaint"  # the recipient marked a message as spam


class AddressSuppression(models.Model):
    """An address of an app that no longer gets a channel, whoever the recipient holding it is:
    a mailbox that hard-bounced (it does not exist) or whose owner marked a message as spam.

    Checked when a send is accepted and again at the moment of sending, before every other
    rule, required categories included: mail to an address that does not exist, or to someone
    who reported it as spam, harms the sender's reputation with every mailbox provider, and SES
    keeps its own account-level suppression list for the same reason (PROVIDERS.md, SES). An
    operator removes a row in the admin when the address works again.

    Attributes:
        channel: the channel the address was refused on (``email``).
        address: as sent, lower-cased (mailboxes are matched case-insensitively in practice).
        reason: a :class:`SuppressionReason`, also the ``reason`` of each delivery it suppresses.
    """

    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="suppressions")
    channel = models.CharField(max_length=32)
    address = models.CharField(max_length=320)
    reason = models.CharField(max_length=32, choices=SuppressionReason.choices)
    #: The delivery whose event caused it, for the operator (kept when that delivery goes).
    delivery_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "channel", "address"], name="suppression_unique")]
        verbose_name_plural = "address suppressions"

    def __str__(self) -> str:
        return f"{self.channel} {self.address} ({self.reason})"

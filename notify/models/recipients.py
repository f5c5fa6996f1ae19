from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models


class Recipient(models.Model):
    """A user of the calling product, known by the product's own id (``external_id``)."""

    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="recipients")
    external_id = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True)
    locale = models.CharField(max_length=35, default="en")  # BCP 47 tag
    timezone = models.CharField(max_length=64, default="UTC")  # IANA zone name
    email = models.CharField(max_length=320, blank=True)
    phone = models.CharField(max_length=16, blank=True)  # E.164
    # The recipient's own quiet hours ("HH:MM-HH:MM" local, "none", or "" for the app's or the
    # category's) and global mute (until muted_until when set, else until unmuted).
    quiet_hours = models.CharField(max_length=16, blank=True)
    muted = models.BooleanField(default=False)
    muted_until = models.DateTimeField(null=True, blank=True)
    #: Short slugs the product labels the recipient with, for broadcast segments (notify.validators.TAG_RE).
    tags = ArrayField(models.CharField(max_length=32), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "external_id"], name="recipient_unique_per_app")]
        indexes = [GinIndex(fields=["tags"], name="recipient_tags")]

    def __str__(self) -> str:
        return f"{self.app_id}:{self.external_id}"


class Device(models.Model):
    """A push address of a recipient on one platform (``ios``, ``android``, ``web``: the
    platforms the device channels declare, channels.registry.device_platforms): a device token,
    or a Web Push subscription (``token`` holds its endpoint, ``subscription`` the object)."""

    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="+")
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="devices")
    platform = models.CharField(max_length=16)
    token = models.TextField()
    subscription = models.JSONField(null=True, blank=True)
    active = models.BooleanField(default=True)
    deactivated_reason = models.CharField(max_length=64, blank=True)
    last_seen_at = models.DateTimeField(auto_now=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "platform", "token"], name="device_token_unique_per_app")]
        indexes = [models.Index(fields=["recipient", "active"])]

    def __str__(self) -> str:
        return f"{self.platform}:{self.token[:16]}…"


class Preference(models.Model):
    """Opt-in or opt-out of one recipient for one channel, optionally for one category only
    (``category`` empty = every category). No row means opted in."""

    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="preferences")
    channel = models.CharField(max_length=16)  # a channel of channels.registry
    category = models.CharField(max_length=64, blank=True, default="")
    enabled = models.BooleanField()
    source = models.CharField(max_length=32, default="api")  # api, admin, page, sms_stop, unsubscribe, provider
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["recipient", "channel", "category"], name="preference_unique")]

    def __str__(self) -> str:
        state = "in" if self.enabled else "out"
        return f"{self.recipient_id} {self.channel}/{self.category or '*'}: {state}"

from django.db import models


class Category(models.Model):
    """A kind of notification an app sends (``security``, ``transactional``, ``marketing``), and
    the rules its recipients' choices follow. A send names its category (``category``, or its
    template's); a category the app has not defined follows the defaults below.

    Attributes:
        required: recipients may not opt out of it, mute it or rate-limit it (a sign-in code),
            and quiet hours do not hold it.
        defaults: ``{"<channel or content group>": bool}``: whether a recipient who never chose
            receives it on that channel (a channel's own entry wins over its group's; absent:
            True). ``{"sms": false}`` makes SMS opt-in.
        rate_limits: ``{"<channel, content group or *>": "<limits>"}``, the maximums per
            recipient and channel over sliding windows in the syntax of the ``limits`` library
            (``"3/hour;10/day"``); absent: ``NOTIFY_RATE_LIMIT``.
        over_limit: ``suppress`` (the delivery ends ``suppressed``, ``rate_limited``) or
            ``defer`` (held until the windows allow it).
        quiet_hours: ``"HH:MM-HH:MM"`` in the recipient's time zone, ``"none"`` (never held), or
            empty for the app's. A recipient's own setting wins over both.
    """

    class OverLimit(models.TextChoices):
        SUPPRESS = "suppress"
        DEFER = "defer"

    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="categories")
    name = models.SlugField(max_length=64)
    label = models.CharField(max_length=100, blank=True)
    description = models.CharField(max_length=300, blank=True)
    required = models.BooleanField(default=False)
    defaults = models.JSONField(default=dict, blank=True)
    rate_limits = models.JSONField(default=dict, blank=True)
    over_limit = models.CharField(max_length=8, choices=OverLimit.choices, default=OverLimit.SUPPRESS)
    quiet_hours = models.CharField(max_length=16, blank=True)
    #: False: no open pixel and no click redirects in this category's email, whatever the app says.
    tracking = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "categories"
        constraints = [models.UniqueConstraint(fields=["app", "name"], name="category_name_unique")]

    def __str__(self) -> str:
        return f"{self.name}{' (required)' if self.required else ''}"

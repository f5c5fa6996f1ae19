from django.core.exceptions import ValidationError
from django.db import models


class Template(models.Model):
    """Shared content of one kind of notification, kept in versions (:class:`TemplateVersion`).

    A send names the template and optionally a version (``template_version``); without one it
    takes the latest published version. An archived template takes no sends.

    Attributes:
        default_locale: the locale used when a version has none matching the recipient's
            (BCP 47, e.g. ``en``).
        truncate_push: when a push body makes the payload too large for a push provider, cut it
            on grapheme-cluster boundaries (with an ellipsis) instead of refusing the send.
    """

    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="templates")
    name = models.SlugField(max_length=100)
    category = models.CharField(max_length=64, default="general")
    default_locale = models.CharField(max_length=35, default="en")
    truncate_push = models.BooleanField(default=False)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "name"], name="template_name_unique")]

    def __str__(self) -> str:
        return self.name


class TemplateVersion(models.Model):
    """One version of a template: its content per locale, and optional A/B variants.

    ``content`` shape (Jinja2 syntax in every string, rendered in a sandbox with strict
    variables)::

        {"en": {"push": {"title": "...", "body": "...", "data": {...}},
                "sms": {"body": "..."},
                "email": {"subject": "...", "text": "...", "html": "...", "from_name": "..."}},
         "ko": {...}}

    ``variants``: ``[{"name": "a", "weight": 50, "content": {<locale>: {...}}}, ...]``; a
    recipient is assigned one by weight, deterministically per recipient and version (the
    experiment). A version is a draft until ``published_at`` is set; a published version never
    changes (editing makes a new version).
    """

    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    content = models.JSONField()
    variants = models.JSONField(default=list, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["template", "number"], name="template_version_unique")]
        ordering = ["template", "number"]

    def save(self, *args, **kwargs):
        if self.pk and TemplateVersion.objects.filter(pk=self.pk, published_at__isnull=False).exists():
            raise ValidationError("a published template version cannot change; save a new version")
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.template.name} v{self.number}"

from django.db import models


class Template(models.Model):
    """Shared content of one kind of notification, rendered with the send call's data.

    ``content`` shape (Django template syntax in every string)::

        {"push": {"title": "...", "body": "..."},
         "sms": {"body": "..."},
         "email": {"subject": "...", "text": "...", "html": "..."}}

    ``version`` grows on every change so caches of the compiled template never serve an old one;
    per-locale variants are a later extension (``locale`` reserved for it).
    """

    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="templates")
    name = models.SlugField(max_length=100)
    category = models.CharField(max_length=64, default="general")
    locale = models.CharField(max_length=35, blank=True, default="")
    content = models.JSONField()
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "name", "locale"], name="template_unique")]

    def save(self, *args, **kwargs):
        if self.pk:
            self.version = models.F("version") + 1
        super().save(*args, **kwargs)
        if self.pk and not isinstance(self.version, int):
            self.refresh_from_db(fields=["version"])

    def __str__(self) -> str:
        return self.name

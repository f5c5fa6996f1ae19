from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.dispatch import Signal
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

from .. import scopes as scope_list


class App(models.Model):
    """A product that sends notifications. Recipients, templates and notifications belong to one
    app, so several products can share one deployment."""

    name = models.CharField(max_length=100, unique=True)
    #: ``"HH:MM-HH:MM"`` in each recipient's time zone: non-urgent deliveries wait until the end
    #: (notify.policy); empty for none. A category's or the recipient's own setting wins.
    quiet_hours = models.CharField(max_length=16, blank=True)
    #: Email open tracking (a pixel) and click tracking (links through signed redirects); a
    #: category can switch both off for its mail (e.g. security codes).
    track_opens = models.BooleanField(default=True)
    track_clicks = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class AppAPIKeyQuerySet(models.QuerySet):
    def update(self, **kwargs) -> int:
        # QuerySet.update (and bulk_update, which calls it) sends no post_save: the keys it
        # changes are announced here, so notify.cache drops their cached rows as a save does.
        prefixes = list(self.values_list("prefix", flat=True))
        count = super().update(**kwargs)
        api_keys_updated.send(sender=AppAPIKey, prefixes=prefixes)
        return count


#: Sent after a QuerySet.update of API keys, with ``prefixes``: the public prefixes of the keys.
api_keys_updated = Signal()


class AppAPIKey(AbstractAPIKey):
    """An API key of one app, stored hashed by djangorestframework-api-key.

    ``scopes``: what the key may do, names of notify.scopes.SCOPES (``admin`` grants all); a new
    key gets every scope but ``admin`` unless given its own."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="api_keys")
    scopes = ArrayField(models.CharField(max_length=20), default=scope_list.default, blank=True,
                        validators=[scope_list.validate],
                        help_text="What the key may do; admin grants every scope.")

    objects = APIKeyManager.from_queryset(AppAPIKeyQuerySet)()

    def save(self, *args, **kwargs) -> None:
        # Checked on every save, not only in forms: a key made in code (create_key) or the
        # shell cannot carry a scope the API does not know.
        scope_list.validate(self.scopes)
        super().save(*args, **kwargs)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "app API key"

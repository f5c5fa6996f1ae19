from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class App(models.Model):
    """A product that sends notifications. Recipients, templates and notifications belong to one
    app, so several products can share one deployment."""

    name = models.CharField(max_length=100, unique=True)
    #: ``"HH:MM-HH:MM"`` in each recipient's time zone: non-urgent deliveries wait until the end
    #: (notify.policy); empty for none. A category's or the recipient's own setting wins.
    quiet_hours = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class AppAPIKey(AbstractAPIKey):
    """An API key of one app, stored hashed by djangorestframework-api-key."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="api_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "app API key"

"""OAuth2 clients of an app: the client credentials grant of django-oauth-toolkit (DOT), beside
the API keys (notify.oauth, notify.api.auth)."""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver

from .. import scopes as scope_list


class OAuthClient(models.Model):
    """An OAuth2 client of one app: DOT's ``Application`` (client id, hashed secret, grant type
    client credentials), not swapped, with what the service needs beside it.

    ``scopes``: what its tokens may do, names of notify.scopes.SCOPES (``admin`` grants all); a
    token carries the scopes it was issued with and each request gets those the client still
    holds, so narrowing or disabling a client applies to the tokens already out, on their next
    request. ``active``: off, its tokens are refused and it gets no new one.

    Deleting a client deletes its DOT application and with it every token (below)."""

    application = models.OneToOneField("oauth2_provider.Application", on_delete=models.CASCADE,
                                       related_name="notify_client")
    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="oauth_clients")
    scopes = ArrayField(models.CharField(max_length=20), default=scope_list.default, blank=True,
                        validators=[scope_list.validate],
                        help_text="What the client's tokens may do; admin grants every scope.")
    active = models.BooleanField(default=True, help_text="Off: its tokens are refused and it gets no new one.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "OAuth client"

    def __str__(self) -> str:
        return f"{self.app} / {self.application.client_id}"

    def save(self, *args, **kwargs) -> None:
        # As AppAPIKey: checked on every save, so no client can hold a scope the API does not know.
        scope_list.validate(self.scopes)
        super().save(*args, **kwargs)
        if not self.active:
            # Disabled means revoked: turning it on again does not bring its old tokens back.
            # (Their requests are refused anyway: the token look-up reads ``active``.)
            from oauth2_provider.models import AccessToken

            AccessToken.objects.filter(application_id=self.application_id).delete()


@receiver(post_delete, sender=OAuthClient)
def _client_deleted(sender, instance: OAuthClient, **kwargs):
    # The DOT application without its client would be a client id nobody can use; deleting it
    # deletes its tokens too (ForeignKey CASCADE). Also when the app is deleted.
    from oauth2_provider.models import Application

    Application.objects.filter(pk=instance.application_id).delete()

from django.db import models


class ProviderCredential(models.Model):
    """An app's own provider settings (credentials, sender, topic...) over the deployment's.

    The values (setting key of the provider's adapter → text, notify.credentials checks them) are
    kept sealed as one token (notify.sealing), secrets and the rest alike; only
    notify.credentials opens them. An app without a row for a provider sends with the
    deployment's settings.

    Attributes:
        provider: a registered provider name (``channels.registry.providers()``).
        sealed: the values, one MultiFernet token (text).
        version: 1 when created, bumped on every change of the values: a worker keeps one
            adapter per app and provider and builds a new one when the claim reports another
            version (notify.providers). A re-encryption with a new key changes no value and keeps
            it.
    """

    app = models.ForeignKey("notify.App", on_delete=models.CASCADE, related_name="provider_credentials")
    provider = models.CharField(max_length=32)
    sealed = models.TextField()
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "provider"], name="provider_credential_unique")]
        verbose_name = "provider credentials"
        verbose_name_plural = "provider credentials"

    def __str__(self) -> str:
        return f"{self.provider} of {self.app}"

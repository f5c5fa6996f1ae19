"""The admin of the apps' own provider settings (notify.models.ProviderCredential).

One field per setting the provider's adapter lets an app set (notify.credentials); a secret's
field is write-only: it never shows the stored value, nor the one just typed when the form comes
back with an error, and left blank it keeps the stored value ("remove" drops it). Nothing is
saved unless the checks of the API pass (the same functions), so the admin cannot store settings
the API would refuse. The list shows which secrets are set, never their values.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from channels import registry

from . import credentials, sealing
from .models import ProviderCredential


class WriteOnlyTextarea(forms.Textarea):
    """A textarea (PEM keys and JSON keys span lines) that renders empty whatever its value:
    ``PasswordInput(render_value=False)`` for multi-line secrets."""

    def get_context(self, name, value, attrs):
        return super().get_context(name, None, attrs)


def _field(provider: str, key: str) -> str:
    return f"{provider}__{key}"


def _clear(provider: str, key: str) -> str:
    return f"{provider}__{key}__remove"


class ProviderCredentialForm(forms.ModelForm):
    """App and provider, then the settings of the provider (of every provider on the add page,
    each in its own section: only the chosen provider's are read)."""

    #: provider → its stored values (the row's provider only; filled by :func:`form_for`)
    stored: dict[str, dict[str, str]] = {}

    class Meta:
        model = ProviderCredential
        fields = ["app", "provider"]
        widgets = {"provider": forms.Select(choices=())}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "provider" in self.fields:
            self.fields["provider"].widget.choices = [(p, f"{p} ({cls.label or cls.name})")
                                                      for p, cls in registry.providers().items()]

    def clean(self):
        cleaned = super().clean()
        provider = self.instance.provider if self.instance.pk else cleaned.get("provider")
        if not provider:
            return cleaned
        try:
            settings = credentials.app_settings(provider)
        except credentials.CredentialsRefused as exc:
            raise ValidationError({"provider": str(exc)}) from None
        stored = self.stored.get(provider, {})
        values = {}
        for setting in settings:
            given = (cleaned.get(_field(provider, setting.key)) or "").strip()
            if given:
                values[setting.key] = given
            elif setting.secret and stored.get(setting.key) and not cleaned.get(_clear(provider, setting.key)):
                values[setting.key] = stored[setting.key]  # blank keeps the stored secret
        others = sorted(name for name, value in cleaned.items()
                        if value and "__" in name and not name.startswith(f"{provider}__"))
        if others:
            raise ValidationError(f"settings of another provider are filled in ({', '.join(others)}): clear them "
                                  f"or choose that provider")
        try:
            self.values = credentials.check_values(provider, values)
        except ValidationError as exc:
            errors = getattr(exc, "error_dict", {})
            raise ValidationError({_field(provider, key) if key != "non_field_errors" else None: problems
                                   for key, problems in errors.items()} or exc) from None
        try:
            credentials.check_adapter(provider, self.values)
        except credentials.CredentialsRefused as exc:
            raise ValidationError(str(exc)) from None
        return cleaned


def form_for(obj: ProviderCredential | None) -> type[ProviderCredentialForm]:
    """The form class for ``obj`` (None: the add page, every provider's settings)."""
    providers = [obj.provider] if obj is not None else list(registry.providers())
    stored: dict[str, dict[str, str]] = {}
    if obj is not None:
        try:
            stored[obj.provider] = credentials.values_of(obj)
        except sealing.SealError:
            stored[obj.provider] = {}
    attrs: dict = {"stored": stored}
    for provider in providers:
        values = stored.get(provider, {})
        for setting in credentials.app_settings(provider):
            if setting.secret:
                is_set = bool(values.get(setting.key))
                attrs[_field(provider, setting.key)] = forms.CharField(
                    label=setting.key, required=False, strip=False,
                    widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off"}),
                    help_text=f"{setting.doc}. Secret: " + ("set; leave blank to keep it." if is_set
                                                            else "not set."))
                if is_set:
                    attrs[_clear(provider, setting.key)] = forms.BooleanField(
                        label=f"remove {setting.key}", required=False,
                        help_text="use the deployment's value again")
            else:
                attrs[_field(provider, setting.key)] = forms.CharField(
                    label=setting.key, required=False, initial=values.get(setting.key),
                    help_text=f"{setting.doc}. Blank: the deployment's value"
                              + (", but none while a setting it goes with is set (they are the app's together)."
                                 if setting.group else "."))
    return type("ProviderCredentialSettingsForm", (ProviderCredentialForm,), attrs)


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(admin.ModelAdmin):
    """An app's own provider settings; secrets are write-only."""

    list_display = ("app", "provider", "secrets_set", "version", "updated_at")
    list_filter = ("provider", "app")
    search_fields = ("app__name",)

    def get_readonly_fields(self, request, obj=None):
        return ("app", "provider", "version", "updated_at") if obj is not None else ()

    def get_fieldsets(self, request, obj=None):
        head = ("app", "provider", "version", "updated_at") if obj is not None else ("app", "provider")
        form = form_for(obj)
        sections = [(None, {"fields": head})]
        for provider in ([obj.provider] if obj is not None else registry.providers()):
            names = [name for name in form.base_fields if name.startswith(f"{provider}__")]
            cls = registry.provider_class(provider)
            sections.append((f"{provider}: {cls.label or cls.name}" if obj is None else "settings", {
                "fields": names, "classes": ["collapse"] if obj is None else [],
                "description": "Only the chosen provider's settings are read; a blank one takes the deployment's "
                               "value." if obj is None else "A blank setting takes the deployment's value."}))
        return sections

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = form_for(obj)
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        # Sealed and versioned in one place (notify.credentials.save), as the API writes.
        row, _ = credentials.save(obj.app_id, obj.provider, form.values)
        obj.pk, obj.sealed, obj.version, obj.updated_at = row.pk, row.sealed, row.version, row.updated_at

    @admin.display(description="secrets set")
    def secrets_set(self, obj: ProviderCredential) -> str:
        described = credentials.describe(obj)
        if not described["readable"]:
            return "unreadable: no configured key opens them"
        return ", ".join(described["secrets"]) or "none"

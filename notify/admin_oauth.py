"""The admin of the apps' OAuth2 clients (notify.models.OAuthClient, notify.oauth): app, label,
scopes as checkboxes, enabled; a new client's id and secret are shown once, in a message (only
the secret's hash is stored). django-oauth-toolkit's own pages for applications, grants, ID and
refresh tokens are removed: an application made there belongs to no app and authenticates
nowhere, and the other grants are not offered. Its access-token page stays: it lists the tokens
out and revokes them (action "Revoke selected access tokens")."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from oauth2_provider.models import Application, Grant, IDToken, RefreshToken

from . import oauth
from . import scopes as scope_list
from .models import OAuthClient

for _model in (Application, Grant, IDToken, RefreshToken):
    # Its admin module registers first (INSTALLED_APPS order).
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class OAuthClientForm(forms.ModelForm):
    """A client's label (its DOT application's name) and scopes as checkboxes (notify.scopes)."""

    name = forms.CharField(max_length=255, required=False, help_text="A label (default: '<app> client').")
    scopes = forms.TypedMultipleChoiceField(
        choices=[(name, f"{name}: {meaning}") for name, meaning in scope_list.SCOPES.items()],
        widget=forms.CheckboxSelectMultiple, required=False, initial=scope_list.default,
        help_text="What the client's tokens may do; takes effect on their next request.")

    class Meta:
        model = OAuthClient
        fields = ["name", "app", "scopes", "active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["name"].initial = self.instance.application.name
            # A client stays with its app: its tokens were issued for that app's data.
            self.fields["app"].disabled = True


@admin.register(OAuthClient)
class OAuthClientAdmin(admin.ModelAdmin):
    form = OAuthClientForm
    fields = ["client_id", "name", "app", "scopes", "active", "created_at"]
    readonly_fields = ["client_id", "created_at"]
    list_display = ["client_id", "label", "app", "scope_list", "active", "created_at"]
    list_select_related = ["application", "app"]
    list_filter = ["active", "app"]
    search_fields = ["application__client_id", "application__name", "app__name"]

    @admin.display(description="client id")
    def client_id(self, obj: OAuthClient) -> str:
        return obj.application.client_id if obj.pk else "(made when saved)"

    @admin.display(description="name")
    def label(self, obj: OAuthClient) -> str:
        return obj.application.name

    @admin.display(description="scopes")
    def scope_list(self, obj: OAuthClient) -> str:
        return ", ".join(obj.scopes) or "none"

    def save_model(self, request, obj: OAuthClient, form, change: bool) -> None:
        name = form.cleaned_data.get("name", "")
        if change:
            obj.save()
            if name and name != obj.application.name:
                Application.objects.filter(pk=obj.application_id).update(name=name)
            return
        # The admin's change view runs in a transaction: the application goes with the client.
        obj.application, secret = oauth.new_application(obj.app, name)
        obj.save()
        messages.warning(request, f"The client id of {obj.application.name} is {obj.application.client_id} and its "
                                  f"secret is {secret}. Store the secret somewhere safe: it is not shown again.")

"""The admin's template preview page: a form (version, locale, variant, recipient, data) and the
per-channel columns it shows, all from :func:`notify.preview.preview`, so the page shows exactly
what a send would carry and what each channel's provider would say about it.

Nothing here sends or writes anything. Every value reaches the page through Django's template
auto-escaping; the email's HTML part is shown only inside a sandboxed ``<iframe srcdoc>`` (no
scripts, no same-origin access) and, as source, escaped.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from channels import registry

from .models import Recipient, Template, TemplateVersion
from .preview import PreviewError, preview
from .rendering import RenderError, variables


class PrettyJSONField(forms.JSONField):
    """A JSON field shown indented and with its non-ASCII text as written (Korean stays
    Korean), so content can be read and edited in a textarea."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)

    def has_changed(self, initial, data):
        # forms.JSONField compares what was posted even for a disabled field (a browser posts
        # nothing for one): a disabled field never changes.
        return False if self.disabled else super().has_changed(initial, data)


def json_textarea(rows: int = 14) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "cols": 100, "class": "vLargeTextField notify-json",
                                 "spellcheck": "false"})


def version_variables(version: TemplateVersion) -> list[str]:
    """Every data variable ``version`` uses, in any locale or variant (sorted); a part that does
    not compile is left out."""
    sources = [version.content] + [v.get("content") for v in version.variants or [] if isinstance(v, dict)]
    names: set[str] = set()
    for source in sources:
        for parts in (source or {}).values() if isinstance(source, dict) else ():
            if isinstance(parts, dict):
                try:
                    names |= variables(parts)
                except RenderError:
                    pass
    return sorted(names)


class VersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: TemplateVersion) -> str:
        if obj.published_at:
            return f"v{obj.number} (published {obj.published_at:%Y-%m-%d %H:%M} UTC)"
        return f"v{obj.number} (draft)"


class PreviewForm(forms.Form):
    version = VersionChoiceField(queryset=TemplateVersion.objects.none(), to_field_name="number", empty_label=None,
                                 help_text="Any version, drafts included.")
    locale = forms.ChoiceField(required=False)
    variant = forms.ChoiceField(required=False)
    recipient = forms.CharField(required=False, max_length=255, label="Recipient external id",
                                help_text="Optional: the recipient's locale and A/B variant assignment are then "
                                          "used (unless chosen above), and <code>recipient.name</code> is theirs.")
    data = PrettyJSONField(required=False, widget=json_textarea(10),
                           help_text="The send's <code>data</code>: a JSON object.")

    def __init__(self, template: Template, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = template
        versions = template.versions.order_by("-number")
        self.fields["version"].queryset = versions
        locales: set[str] = set()
        variant_names: set[str] = set()
        for version in versions:
            locales.update(version.content or {})
            for variant in version.variants or []:
                if isinstance(variant, dict):
                    variant_names.add(str(variant.get("name")))
                    locales.update(variant.get("content") or {})
        self.fields["locale"].choices = [("", f"the recipient's, else the template's default ({template.default_locale})")] + [
            (locale, locale) for locale in sorted(locales)]
        self.fields["variant"].choices = [("", "the recipient's assignment (by weight)" if variant_names
                                           else "none (this template has no A/B variants)")] + [
            (name, name) for name in sorted(variant_names)]
        self.recipient_obj: Recipient | None = None

    def clean_recipient(self) -> str:
        external_id = self.cleaned_data["recipient"].strip()
        if external_id:
            self.recipient_obj = Recipient.objects.filter(app_id=self.template.app_id, external_id=external_id).first()
            if self.recipient_obj is None:
                raise ValidationError(f"No recipient {external_id!r} in the app {self.template.app}.")
        return external_id

    def clean_data(self) -> dict:
        value = self.cleaned_data["data"]
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValidationError('The data must be a JSON object, e.g. {"name": "Jiwoo"}.')
        return value

    def run(self) -> dict[str, Any] | None:
        """The preview of the submitted choices, or None with the reason added to the form's
        errors (a missing variable names every one that is missing)."""
        if not self.is_valid():
            return None
        recipient = None
        if self.recipient_obj is not None:
            r = self.recipient_obj
            recipient = {"external_id": r.external_id, "name": r.name, "locale": r.locale, "timezone": r.timezone}
        try:
            return preview(self.template, self.cleaned_data["version"], self.cleaned_data["data"], recipient,
                           locale=self.cleaned_data["locale"] or None, variant=self.cleaned_data["variant"] or None)
        except PreviewError as exc:
            if exc.code == "missing_variables":
                self.add_error("data", ValidationError(
                    "Missing variables: %(names)s. The template uses them and the data does not give them.",
                    code="missing_variables", params={"names": ", ".join(exc.names)}))
            elif exc.code == "variant_not_found":
                self.add_error("variant", ValidationError(str(exc), code=exc.code))
            else:
                self.add_error(None, ValidationError(f"The template does not render: {exc}", code=exc.code))
            return None


def initial_data(version: TemplateVersion | None) -> dict[str, str]:
    """A data skeleton for ``version``: each variable it uses, with an empty value. A dict: the
    form's field writes it as JSON (a string here was written as a JSON string, which the form
    then refused as not an object)."""
    names = version_variables(version) if version else []
    return {name: "" for name in names}


def columns(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One column per channel of a preview, in the registry's order, with what the page shows."""
    out = []
    for channel, entry in result["channels"].items():
        cls = registry.channel_class(channel)
        content = entry["content"] or {}
        info = dict(entry["content_info"] or {})
        error = entry["error"]
        if error:  # the message repeats the code first ("payload_too_large: 4200 bytes > 4096")
            detail = error["message"].removeprefix(error["code"]).removeprefix(":").strip()
            error = {"code": error["code"], "detail": detail}
        column: dict[str, Any] = {
            "channel": channel, "label": cls.label or channel, "group": cls.content_group,
            "provider": (settings.NOTIFY_CHANNEL_PROVIDERS.get(channel) or [cls.provider])[0],
            "content": content, "error": error, "truncated": bool(entry.get("truncated")),
            "encoding": info.pop("encoding", None), "segments": info.pop("segments", None),
            "payload_bytes": info.pop("payload_bytes", None), "payload_limit": info.pop("payload_limit", None),
            "other_info": sorted(info.items()),
        }
        if column["payload_bytes"] is not None and column["payload_limit"]:
            column["payload_percent"] = min(100, round(100 * column["payload_bytes"] / column["payload_limit"]))
        if isinstance(content.get("data"), (dict, list)):
            column["data_json"] = json.dumps(content["data"], ensure_ascii=False, indent=2)
        if column["group"] not in ("push", "sms", "email"):
            column["content_json"] = json.dumps(content, ensure_ascii=False, indent=2)
        out.append(column)
    return out

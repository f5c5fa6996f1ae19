"""Request and response shapes of the templates API (``/api/v1/templates``).

A template's content is one object per locale, each with the send API's content groups (the
``push``/``sms``/``email`` fields of ``notify.api.serializers``), where every string is a Jinja2
template: it must compile in the rendering sandbox (``notify.rendering.check_syntax``) before
anything is written.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from channels import registry

from .. import validators
from ..rendering import RenderError, check_syntax
from . import serializers as s

#: A BCP 47-like locale tag: a 2-3 letter language, then subtags of 2-8 letters or digits
#: (``en``, ``ko-KR``, ``zh-Hant-TW``, ``es-419``); at most the model's 35 characters.
LOCALE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
MAX_LOCALE_LENGTH = 35
#: Variants are the arms of an A/B(/C...) experiment, named like ``a`` to ``z``.
MAX_VARIANTS = 26
MAX_VARIANT_WEIGHT = 1_000_000
#: The column a delivery records its variant in (Delivery.variant) is 32 characters.
MAX_VARIANT_NAME = 32
_TEMPLATE_SYNTAX = ("{{", "{%", "{#")


def locale_tag(value: str) -> str:
    if len(value) > MAX_LOCALE_LENGTH or not LOCALE_TAG.fullmatch(value):
        raise serializers.ValidationError("not a locale tag such as en or ko-KR")
    return value


class TemplatedURLField(serializers.CharField):
    """A URL part of a template: a literal one must be an http(s) URL; one with template syntax
    (``https://example.com/orders/{{ order }}``) is only checked to compile."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 2048)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not any(mark in value for mark in _TEMPLATE_SYNTAX):
            try:
                URLValidator(schemes=["http", "https"])(value)
            except DjangoValidationError:
                raise serializers.ValidationError("Enter a valid URL.") from None
        return value


class TemplatePushContent(s.PushContent):
    """The send API's push content, where ``image`` and ``url`` may be templates."""

    image = TemplatedURLField(required=False)
    url = TemplatedURLField(required=False)


#: Content group → the fields its template part takes (the send API's content).
GROUP_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "push": TemplatePushContent, "sms": s.SMSContent, "email": s.EmailContent}


class TemplateParts(s.StrictSerializer):
    """One locale's content: the content groups of the enabled channels (``push``, ``sms``,
    ``email``) with the send API's fields; every string is a Jinja2 template."""

    def get_fields(self):
        return {group: GROUP_SERIALIZERS[group](required=False)
                for group in registry.content_groups() if group in GROUP_SERIALIZERS}

    def validate(self, attrs):
        try:
            check_syntax(attrs)
        except RenderError as exc:
            raise serializers.ValidationError(
                {exc.field: [str(exc).removeprefix(f"{exc.field}: ")]}) from None
        return attrs


class LocalizedContent(serializers.DictField):
    """``{<locale>: <parts>}``: at least one locale; keys are locale tags, unique regardless of
    case (a recipient's locale is matched case-insensitively)."""

    def __init__(self, **kwargs):
        super().__init__(child=TemplateParts(), allow_empty=False, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors: dict[str, list[str]] = {}
            seen: dict[str, str] = {}
            for key in data:
                key = str(key)
                try:
                    locale_tag(key)
                except serializers.ValidationError as exc:
                    errors[validators.escaped(key)] = list(exc.detail)  # no lone surrogate in the answer
                    continue
                if key.lower() in seen:
                    errors[key] = [f"the same locale as {seen[key.lower()]!r}"]
                elif data[key] == {}:
                    errors[key] = [f"give content for at least one of {', '.join(self.child.fields)}"]
                seen.setdefault(key.lower(), key)
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def has_locale(content: dict, locale: str) -> bool:
    return locale.lower() in {key.lower() for key in content}


class VariantIn(s.StrictSerializer):
    """An A/B variant: its own content per locale, given to recipients in proportion to
    ``weight`` (deterministically per recipient and version)."""

    name = serializers.SlugField(max_length=MAX_VARIANT_NAME)
    weight = serializers.IntegerField(min_value=1, max_value=MAX_VARIANT_WEIGHT)
    content = LocalizedContent()


class VersionIn(s.StrictSerializer):
    """``POST /api/v1/templates/<name>/versions``: a new version (the only way to change
    content: a published version never changes)."""

    content = LocalizedContent(help_text="`{<locale>: {push|sms|email parts}}`; every string is a Jinja2 template")
    variants = serializers.ListField(child=VariantIn(), required=False, max_length=MAX_VARIANTS,
                                     help_text="A/B variants, each with its own content; a recipient gets one by "
                                               "weight")
    publish = serializers.BooleanField(default=True, help_text="publish at once (default) or keep as a draft")

    #: Where a content without the template's default locale is reported.
    default_locale_field = "content"

    def template_default_locale(self, attrs) -> str:
        return self.context["default_locale"]

    def validate(self, attrs):
        attrs = super().validate(attrs)
        default = self.template_default_locale(attrs)
        errors: dict[str, list[str]] = {}
        if not has_locale(attrs["content"], default):
            errors[self.default_locale_field] = [
                f"the default locale {default!r} is not one of the content's locales ({', '.join(attrs['content'])})"]
        variants = [dict(v) for v in attrs.get("variants") or []]
        names: set[str] = set()
        for index, variant in enumerate(variants):
            if variant["name"] in names:
                errors[f"variants.{index}.name"] = [f"duplicate variant name {variant['name']!r}"]
            names.add(variant["name"])
            if not has_locale(variant["content"], default):
                errors[f"variants.{index}.content"] = [f"lacks the default locale {default!r}"]
        if errors:
            raise serializers.ValidationError(errors)
        attrs["variants"] = variants
        return attrs


class TemplateCreateIn(VersionIn):
    """``POST /api/v1/templates``: a template with its version 1."""

    name = serializers.SlugField(max_length=100, help_text="unique per app; what a send names as `template`")
    category = serializers.SlugField(max_length=64, default="general",
                                     help_text="a send's default category (preferences can opt out of one)")
    default_locale = serializers.CharField(max_length=MAX_LOCALE_LENGTH, default="en", validators=[locale_tag],
                                           help_text="used when a version has no content in the recipient's locale "
                                                     "nor its language; must be one of the content's locales")
    truncate_push = serializers.BooleanField(
        default=False, help_text="cut a push body too large for a push provider (on grapheme clusters) "
                                 "instead of refusing the send")

    default_locale_field = "default_locale"

    def template_default_locale(self, attrs) -> str:
        return attrs["default_locale"]


class TemplatePatchIn(s.StrictSerializer):
    """``PATCH /api/v1/templates/<name>``: the template's settings (content changes by adding a
    version)."""

    category = serializers.SlugField(max_length=64, required=False)
    default_locale = serializers.CharField(max_length=MAX_LOCALE_LENGTH, required=False, validators=[locale_tag])
    truncate_push = serializers.BooleanField(required=False)

    _NOT_HERE = {"content": "content changes by adding a version: POST /api/v1/templates/<name>/versions",
                 "variants": "variants change by adding a version: POST /api/v1/templates/<name>/versions",
                 "name": "a template's name cannot change"}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            refused = {name: [message] for name, message in self._NOT_HERE.items() if name in data}
            if refused:
                raise serializers.ValidationError(refused)
        return super().to_internal_value(data)


class PreviewIn(s.StrictSerializer):
    """``POST /api/v1/templates/<name>/preview``."""

    data = s.StorableJSONObject(required=False, help_text="the send's `data`")
    recipient = s.external_id_field(required=False, help_text="a recipient's external id: choose locale and variant "
                                                              "as a send to it would, and render with its profile")
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False,
                                       help_text="any version, drafts included (default: the latest published)")
    locale = serializers.CharField(max_length=MAX_LOCALE_LENGTH, required=False, validators=[locale_tag],
                                   help_text="show this locale (with the send's fallback) instead of the recipient's")
    variant = serializers.SlugField(max_length=MAX_VARIANT_NAME, required=False,
                                    help_text="show this variant instead of the recipient's assignment")


# --- responses -------------------------------------------------------------------------------

@extend_schema_field(serializers.DictField(child=TemplateParts()))
class ContentOut(serializers.DictField):
    """Stored content as it is (documented as the request's shape)."""


class VariantOut(serializers.Serializer):
    name = serializers.CharField()
    weight = serializers.IntegerField()
    content = ContentOut()


class VersionOut(serializers.Serializer):
    template = serializers.CharField(help_text="the template's name")
    number = serializers.IntegerField()
    published_at = serializers.DateTimeField(allow_null=True, help_text="null for a draft")
    created_at = serializers.DateTimeField()
    locales = serializers.ListField(child=serializers.CharField())
    content = ContentOut()
    variants = VariantOut(many=True)


class VersionSummaryOut(serializers.Serializer):
    number = serializers.IntegerField()
    published_at = serializers.DateTimeField(allow_null=True, help_text="null for a draft")
    created_at = serializers.DateTimeField()
    locales = serializers.ListField(child=serializers.CharField())
    variants = serializers.ListField(child=serializers.CharField(), help_text="the variants' names")


class TemplateSummaryOut(serializers.Serializer):
    name = serializers.CharField()
    category = serializers.CharField()
    default_locale = serializers.CharField()
    truncate_push = serializers.BooleanField()
    archived = serializers.BooleanField()
    archived_at = serializers.DateTimeField(allow_null=True)
    latest_published = serializers.IntegerField(allow_null=True,
                                                help_text="the version sends use when they pin none")
    latest_version = serializers.IntegerField(allow_null=True, help_text="the newest version, draft or not")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TemplateOut(TemplateSummaryOut):
    versions = VersionSummaryOut(many=True)


class TemplateCreatedOut(TemplateOut):
    version = VersionOut(help_text="version 1, with its content")


class PreviewErrorOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class PreviewChannelOut(serializers.Serializer):
    content = serializers.DictField(help_text="the rendered content this channel would send")
    content_info = serializers.DictField(help_text="what the channel reports: SMS `encoding` and `segments`; "
                                                   "push `payload_bytes` and `payload_limit`")
    error = PreviewErrorOut(allow_null=True, help_text="the provider's rule the content breaks, if any")
    truncated = serializers.BooleanField(required=False, help_text="the push body was cut to fit (truncate_push)")


class PreviewOut(serializers.Serializer):
    template = serializers.CharField()
    version = serializers.IntegerField()
    locale = serializers.CharField()
    variant = serializers.CharField(allow_null=True)
    channels = serializers.DictField(child=PreviewChannelOut())


class ApiErrorBody(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),
                                   help_text="messages by field path, e.g. `content.en.sms.body`")


class ApiError(serializers.Serializer):
    error = ApiErrorBody()

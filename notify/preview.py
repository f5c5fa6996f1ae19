"""Preview: a template version rendered for a recipient and data, per channel, without sending.

Used by the API (``POST /api/v1/templates/<name>/preview``) and the admin's preview page, so both
show exactly what a send would: the same locale and variant choice, the same rendering, and each
channel's own verdict (its adapter's content check and what it reports: SMS encoding and
segments, push payload size against the provider's limit).
"""

from __future__ import annotations

from typing import Any

from channels import registry
from channels.errors import InvalidMessage

from . import providers
from .models import Template, TemplateVersion
from .rendering import MissingVariables, RenderError, assign_variant, render_parts, select_locale
from .truncation import checked


class PreviewError(ValueError):
    """The version cannot be rendered with this data; ``code`` is ``missing_variables`` or
    ``template_error``, ``names`` the missing variables."""

    def __init__(self, code: str, message: str, names: list[str] | None = None):
        super().__init__(message)
        self.code = code
        self.names = names or []


def preview(template: Template, version: TemplateVersion, data: dict[str, Any], recipient: dict[str, Any] | None = None,
            locale: str | None = None, variant: str | None = None) -> dict[str, Any]:
    """Render ``version`` of ``template`` for every channel that has content in it.

    Args:
        data: the send's ``data``.
        recipient: a recipient profile (``external_id``, ``name``, ``locale``, ``timezone``) to
            choose the locale and variant as a send would; None for an anonymous preview.
        locale: a locale to show instead of the recipient's choice.
        variant: a variant name to show instead of the recipient's assignment.

    Returns:
        ``{"template", "version", "locale", "variant", "channels": {channel: {"content",
        "content_info", "error"}}}``; ``error`` is ``{"code", "message"}`` when the channel's
        provider would refuse the content (and ``content`` is then as rendered).

    Raises:
        PreviewError: a variable is missing, or the template does not render.
    """
    recipient = recipient or {"external_id": "", "name": "", "locale": None, "timezone": "UTC"}
    variants = version.variants or []
    if variant is not None:
        chosen = next((v for v in variants if v.get("name") == variant), None)
        if chosen is None:
            raise PreviewError("variant_not_found", f"no variant {variant!r} in this version")
    else:
        chosen = assign_variant(variants, f"{template.app_id}:{recipient['external_id']}", f"{template.id}:{version.number}")
    source = chosen["content"] if chosen else version.content
    used_locale = select_locale(source, locale or recipient.get("locale"), template.default_locale)
    parts = source[used_locale]
    try:
        rendered = render_parts(parts, tuple(parts), data, recipient)
    except MissingVariables as exc:
        raise PreviewError("missing_variables", str(exc), exc.names) from None
    except RenderError as exc:
        raise PreviewError("template_error", str(exc)) from None

    channels: dict[str, Any] = {}
    for channel in registry.channels():
        cls = registry.channel_class(channel)
        group = cls.content_group
        if group not in rendered:
            continue
        content = rendered[group]
        config = providers.content_config(channel)
        entry: dict[str, Any] = {"content": content, "content_info": {}, "error": None}
        try:
            entry["content"], entry["content_info"], cut = checked(cls, content, config, template.truncate_push)
            if cut:
                entry["truncated"] = True
        except InvalidMessage as exc:
            entry["error"] = {"code": exc.reason, "message": str(exc)}
        channels[channel] = entry
    return {"template": template.name, "version": version.number, "locale": used_locale,
            "variant": chosen.get("name") if chosen else None, "channels": channels}


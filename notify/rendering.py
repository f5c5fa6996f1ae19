"""Rendering of template content with the send call's data.

Compiled Django templates are kept per process, keyed by template id and version, so the hot
path parses each template string once per version, not once per request.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from django.template import Context, Engine, TemplateSyntaxError

# Text channels (push, SMS, email text) must not HTML-escape; the email HTML part must.
_text_engine = Engine(autoescape=False)
_html_engine = Engine(autoescape=True)


class RenderError(ValueError):
    """A template string does not compile; ``field`` names the part (e.g. ``email.subject``)."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field = field


@lru_cache(maxsize=4096)
def _compiled(template_id: int, version: int, field: str, source: str):
    engine = _html_engine if field == "email.html" else _text_engine
    try:
        return engine.from_string(source)
    except TemplateSyntaxError as exc:
        raise RenderError(field, str(exc)) from None


def render_content(template: Mapping[str, Any], data: Mapping[str, Any], recipient: Mapping[str, Any]) -> dict:
    """Render every string of ``template["content"]`` (nested ones too) with ``data`` and ``recipient``.

    Args:
        template: the cached template entry (``id``, ``version``, ``content``).
        data: the send call's data; available as top-level names and as ``data``.
        recipient: the recipient profile, available as ``recipient``.

    Returns:
        The content with the same shape (``{"push": {...}, "sms": {...}, "email": {...}}``).

    Raises:
        RenderError: a template string does not compile.
    """
    context = Context({**data, "data": data, "recipient": recipient})

    def render(value: Any, field: str) -> Any:
        if isinstance(value, str):
            text = _compiled(template["id"], template["version"], field, value).render(context)
            return text if field == "email.html" else text.strip()
        if isinstance(value, dict):  # e.g. push.data: its string values are templates too
            return {key: render(item, f"{field}.{key}") for key, item in value.items()}
        return value

    return {group: render(parts, group) for group, parts in template["content"].items()}

"""Rendering of template content: which locale and A/B variant a recipient gets, and the text.

The engine is Jinja2's ``SandboxedEnvironment`` (templates are written by product teams and run
inside the service: no access to attributes that could reach the interpreter) with
``StrictUndefined``: a variable the send's data does not give is an error, never an empty string.
Text parts (push, SMS, email subject and text) are rendered without escaping, so a name like
``O'Brien & "x" <y>`` arrives as written; only the email's HTML part is auto-escaped.

Compiled templates are kept per process by their source text, so a hot template is parsed once.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Iterable, Mapping

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment, SecurityError

_text_engine = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_html_engine = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
#: The one part of a template that is HTML.
HTML_FIELD = "email.html"


class RenderError(ValueError):
    """A template part does not compile or fails to render; ``field`` names the part
    (``email.subject``)."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field = field


class MissingVariables(ValueError):
    """The send's data lacks variables the template uses; ``names`` lists every one (sorted)."""

    def __init__(self, names: Iterable[str]):
        self.names = sorted(set(names))
        super().__init__("missing template variables: " + ", ".join(self.names))


@lru_cache(maxsize=4096)
def _compiled(source: str, html: bool):
    engine = _html_engine if html else _text_engine
    try:
        ast = engine.parse(source)
        return engine.from_string(ast), frozenset(meta.find_undeclared_variables(ast))
    except TemplateSyntaxError as exc:
        raise ValueError(f"line {exc.lineno}: {exc.message}") from None


def select_locale(available: Iterable[str], wanted: str | None, default: str) -> str:
    """The locale of a version to use for a recipient: ``wanted`` itself (``ko-KR``), then its
    language (``ko``), then ``default``; compared case-insensitively. Falls back to the first
    available locale when not even ``default`` is there."""
    by_lower = {locale.lower(): locale for locale in available}
    for candidate in (wanted or "", (wanted or "").split("-")[0], default):
        if candidate and candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    return next(iter(by_lower.values()))


def assign_variant(variants: list[Mapping[str, Any]], recipient_key: str, experiment: str) -> Mapping[str, Any] | None:
    """The variant a recipient gets in an experiment, by weight; None without variants.

    Deterministic: the same recipient and experiment always get the same variant. The point in
    ``[0, total weight)`` is ``h * total // 2**64`` for a 64-bit SHA-256 prefix ``h``: an exact
    scaling of a uniform 64-bit value, so no variant is favoured the way ``h % total`` would
    favour the low ones.
    """
    if not variants:
        return None
    digest = hashlib.sha256(f"{experiment}\x00{recipient_key}".encode()).digest()
    total = sum(int(v["weight"]) for v in variants)
    point = int.from_bytes(digest[:8], "big") * total >> 64
    for variant in variants:
        point -= int(variant["weight"])
        if point < 0:
            return variant
    return variants[-1]


def render_parts(parts: Mapping[str, Any], groups: Iterable[str], data: Mapping[str, Any],
                 recipient: Mapping[str, Any]) -> dict:
    """Render the ``groups`` (``push``, ``sms``, ``email``) of ``parts`` with the send's data.

    Args:
        parts: one locale's content, ``{"push": {...}, "sms": {...}, "email": {...}}``;
            strings at any depth are templates (push ``data`` values too).
        data: the send's data; its keys are top-level names, and it is ``data`` as a whole.
        recipient: the recipient's profile, available as ``recipient`` (``name``, ``locale``,
            ``timezone``, ``external_id``).

    Returns:
        The rendered content of those groups, with the same shape; text parts stripped.

    Raises:
        MissingVariables: naming every variable the parts use and ``data`` does not give.
        RenderError: a part does not compile, or fails while rendering (an attribute of a
            given variable that is not there, a sandbox violation).
    """
    context = {**data, "data": data, "recipient": {k: recipient.get(k) for k in
                                                   ("external_id", "name", "locale", "timezone")}}
    wanted = [group for group in groups if group in parts]
    compiled: dict[str, Any] = {}
    missing: set[str] = set()

    def compile_all(value: Any, field: str) -> None:
        if isinstance(value, str):
            try:
                compiled[field], names = _compiled(value, field == HTML_FIELD)
            except ValueError as exc:
                raise RenderError(field, str(exc)) from None
            missing.update(names - context.keys())
        elif isinstance(value, dict):
            for key, item in value.items():
                compile_all(item, f"{field}.{key}")

    for group in wanted:
        compile_all(parts[group], group)
    if missing:
        raise MissingVariables(missing)

    def render(value: Any, field: str) -> Any:
        if isinstance(value, str):
            try:
                text = compiled[field].render(context)
            except (UndefinedError, SecurityError) as exc:
                raise RenderError(field, str(exc)) from None
            return text if field == HTML_FIELD else text.strip()
        if isinstance(value, dict):
            return {key: render(item, f"{field}.{key}") for key, item in value.items()}
        return value

    return {group: render(parts[group], group) for group in wanted}

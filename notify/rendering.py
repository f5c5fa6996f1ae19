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
import re
from functools import lru_cache
from typing import Any, Iterable, Mapping

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

#: Longest string or list one operation in a template may build (characters / items): a
#: template is data from an API client, and ``{{ "x" * 10**9 }}`` must not exhaust a worker.
MAX_BUILT = 100_000


#: Longest range a template may loop over (Jinja2's own sandbox allows 100,000).
MAX_RANGE = 1000
#: A width or precision in a format string above this would build too much.
_BIG_NUMBER = re.compile(r"\d{6,}")


def _checked_format(value: str) -> str:
    if _BIG_NUMBER.search(value) and any(int(n) > MAX_BUILT for n in _BIG_NUMBER.findall(value)):
        raise SecurityError(f"format would build more than {MAX_BUILT} characters")
    return value


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"range longer than {MAX_RANGE}")
    return numbers


class _Engine(SandboxedEnvironment):
    """Jinja2's sandbox, with the ways a short template can build a huge string checked before
    they run: ``*`` and ``**`` (Jinja2 documents ``intercepted_binops`` for this), ``%`` and the
    ``format`` filter and ``str.format`` with a huge width, ``range`` beyond :data:`MAX_RANGE`,
    and no ``lipsum``. What a render returns is bounded too (:func:`render_parts`)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _range
        original = self.filters["format"]
        self.filters["format"] = lambda value, *args, **kw: original(_checked_format(str(value)), *args, **kw)

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            sized, count = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            if isinstance(sized, (str, list, tuple)) and isinstance(count, int) and len(sized) * count > MAX_BUILT:
                raise SecurityError(f"would build more than {MAX_BUILT} characters")
        if operator == "%" and isinstance(left, str):
            _checked_format(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value):
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        _checked_format(value.__self__)
        return wrapper


_text_engine = _Engine(undefined=StrictUndefined, autoescape=False)
_html_engine = _Engine(undefined=StrictUndefined, autoescape=True)
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
    """``(template, required names)``: the names a render needs from the context, i.e. every
    undeclared variable except those used only under ``default`` or ``is defined`` (which is how
    a template makes a variable optional)."""
    engine = _html_engine if html else _text_engine
    try:
        ast = engine.parse(source)
        template = engine.from_string(ast)
    except TemplateSyntaxError as exc:
        raise ValueError(f"line {exc.lineno}: {exc.message}") from None
    return template, frozenset(meta.find_undeclared_variables(ast) - _optional_only(ast))


#: Filters and tests that accept an undefined variable.
_OPTIONAL_FILTERS = frozenset({"default", "d"})
_OPTIONAL_TESTS = frozenset({"defined", "undefined"})


def _optional_only(ast: nodes.Node) -> set[str]:
    """Names whose every load is guarded: directly under a ``default`` filter or a ``defined``
    test, or inside an ``{% if name is defined %}`` block."""
    guarded: set[str] = set()
    bare: set[str] = set()

    def defined_in(test: nodes.Node) -> set[str]:
        tests = [test, *test.find_all(nodes.Test)] if isinstance(test, nodes.Test) else test.find_all(nodes.Test)
        return {t.node.name for t in tests if t.name == "defined" and isinstance(t.node, nodes.Name)}

    def walk(node: nodes.Node, safe: frozenset[str], direct: bool = False) -> None:
        if isinstance(node, nodes.Name) and node.ctx == "load":
            (guarded if direct or node.name in safe else bare).add(node.name)
            return
        if isinstance(node, nodes.If):
            inside = safe | defined_in(node.test)
            walk(node.test, inside)  # `x is defined and x`: the second load is guarded too
            for child in node.body:
                walk(child, inside)
            for child in (*node.elif_, *node.else_):
                walk(child, safe)
            return
        for child in node.iter_child_nodes():
            walk(child, safe, (isinstance(node, nodes.Filter) and node.name in _OPTIONAL_FILTERS
                               or isinstance(node, nodes.Test) and node.name in _OPTIONAL_TESTS)
                 and child is node.node)

    walk(ast, frozenset())
    return guarded - bare


#: Tags that need a template loader, which the engines do not have: they could only fail later.
_LOADER_NODES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def check_syntax(parts: Mapping[str, Any]) -> None:
    """Check that every template string of ``parts`` (one locale's content, strings at any
    depth as :func:`render_parts` takes them) compiles, without rendering it (no data needed).

    Beyond Jinja2's own syntax errors this refuses what compiles but could never render here:
    ``extends``/``include``/``import`` (the engines have no loader), filters and tests the
    engine does not have (Jinja2 defers those inside ``if`` blocks to render time), and nesting
    too deep for Python to compile.

    Raises:
        RenderError: naming the first part that does not compile (``email.subject``).
    """

    def check(value: Any, field: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                check(item, f"{field}.{key}" if field else str(key))
            return
        if not isinstance(value, str):
            return
        html = field == HTML_FIELD
        engine = _html_engine if html else _text_engine
        try:
            _compiled(value, html)
            ast = engine.parse(value)
        except ValueError as exc:
            raise RenderError(field, str(exc)) from None
        except (RecursionError, SyntaxError) as exc:  # Python's own limits on the generated code
            raise RenderError(field, f"nested too deeply to compile ({getattr(exc, 'msg', None) or exc})") from None
        for node in ast.find_all(_LOADER_NODES):
            raise RenderError(field, f"line {node.lineno}: templates cannot extend, include or import other templates")
        for node in ast.find_all(nodes.Filter):
            if node.name not in engine.filters:
                raise RenderError(field, f"line {node.lineno}: no filter named {node.name!r}")
        for node in ast.find_all(nodes.Test):
            if node.name not in engine.tests:
                raise RenderError(field, f"line {node.lineno}: no test named {node.name!r}")

    check(parts, "")


def select_locale(available: Iterable[str], wanted: str | None, default: str) -> str:
    """The locale of a version to use for a recipient: ``wanted`` itself (``zh-Hant-TW``), then
    it with its last subtag dropped, one at a time (``zh-Hant``, ``zh``), then ``default``;
    compared case-insensitively. Falls back to the first available locale when not even
    ``default`` is there.

    Raises:
        ValueError: ``available`` is empty.
    """
    by_lower = {locale.lower(): locale for locale in available}
    if not by_lower:
        raise ValueError("a template version needs at least one locale")
    subtags = (wanted or "").split("-")
    candidates = ["-".join(subtags[:n]) for n in range(len(subtags), 0, -1)] + [default]
    for candidate in candidates:
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


def variables(parts: Mapping[str, Any]) -> set[str]:
    """The names a locale's content (``{"push": {...}, "sms": {...}, "email": {...}}``) takes
    from a send's data (``recipient`` and ``data`` themselves excluded): what a send must give.

    Raises:
        RenderError: a part does not compile (``field`` names it).
    """
    names: set[str] = set()

    def walk(value: Any, field: str) -> None:
        if isinstance(value, str):
            try:
                names.update(_compiled(value, field == HTML_FIELD)[1])
            except ValueError as exc:
                raise RenderError(field, str(exc)) from None
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{field}.{key}")

    for group, value in parts.items():
        walk(value, group)
    return names - {"recipient", "data"}


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
            except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
                # Compiles, yet fails with this data (an attribute not there, a sandbox
                # violation, 1/0, calling a number, a macro calling itself).
                raise RenderError(field, str(exc)) from None
            if len(text) > MAX_BUILT:
                raise RenderError(field, f"renders more than {MAX_BUILT} characters")
            return text if field == HTML_FIELD else text.strip()
        if isinstance(value, dict):
            return {key: render(item, f"{field}.{key}") for key, item in value.items()}
        return value

    return {group: render(parts[group], group) for group in wanted}

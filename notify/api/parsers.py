"""JSON parsing with a nesting limit."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError

#: Deepest nesting of arrays and objects accepted in a request body (the body itself is level 1).
#: Real requests need a handful of levels; the limit keeps every later recursive step (json.dumps,
#: validators, PostgreSQL's jsonb) far from Python's recursion limit.
MAX_JSON_DEPTH = 32


def json_depth(value) -> int:
    """Nesting depth of parsed JSON: 0 for a scalar, 1 for a flat array or object."""
    deepest, stack = 0, [(value, 1)]
    while stack:  # iterative, so measuring cannot itself overflow the stack
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering 400 ``invalid_json`` for too deeply nested documents.

    Without it, ``[[[[...`` 20,000 levels deep (40 KB, under the body limit) makes ``json.loads``
    raise RecursionError, which DRF does not catch: a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels") from None
        if json_depth(data) > MAX_JSON_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels")
        return data

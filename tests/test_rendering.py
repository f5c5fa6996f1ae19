"""The template engine (notify.rendering) on its own: strict variables with an explicit way to be
optional, failures that are the template's (never a 500), bounded output, locale fallback."""

from __future__ import annotations

import pytest

from notify.rendering import MissingVariables, RenderError, render_parts, select_locale


def sms(body: str, data: dict) -> str:
    return render_parts({"sms": {"body": body}}, ["sms"], data, {})["sms"]["body"]


def test_default_and_is_defined_make_a_variable_optional_and_nothing_else_does():
    body = "Hi {{ name }}{% if coupon is defined and coupon %}, code {{ coupon }}{% endif %} {{ tier | default('basic') }}"
    assert sms(body, {"name": "Ana"}) == "Hi Ana basic"
    assert sms(body, {"name": "Ana", "coupon": "C1", "tier": "gold"}) == "Hi Ana, code C1 gold"
    with pytest.raises(MissingVariables) as missing:
        sms("{{ a }} {{ b | default('') }} {{ b }} {% if c is defined %}{% else %}{{ c }}{% endif %}", {})
    assert missing.value.names == ["a", "b", "c"]


@pytest.mark.parametrize("body, data, says", [
    ("{{ 1 / d }}", {"d": 0}, "division by zero"),
    ("{{ n() }}", {"n": 1}, "not callable"),
    ("{{ order.id }}", {"order": {}}, "has no attribute"),
    ("{{ 'x' * 10**9 }}", {}, "more than"),
    ("{{ 2 ** 10000 }}", {}, "exponent"),
    ("{{ ''.__class__.__mro__ }}", {}, "unsafe"),
    ('{{ "%05000000d" % 1 }}', {}, "more than"),
    ('{{ "%0999999999d" | format(1) }}', {}, "more than"),
    ('{{ "{:>999999999}".format(1) }}', {}, "more than"),
    ("{% for i in range(3000) %}x{% endfor %}", {}, "range longer"),
    ("{% for i in range(999) %}{% for j in range(999) %}xx{% endfor %}{% endfor %}", {}, "renders more than"),
])
def test_a_template_that_fails_with_the_data_is_a_render_error_naming_the_part(body, data, says):
    with pytest.raises(RenderError) as error:
        sms(body, data)
    assert error.value.field == "sms.body" and says in str(error.value)


def test_formatting_within_bounds_works():
    assert sms('{{ "%5d" % 3 }}|{{ "{:>4}".format(7) }}|{{ "%s-%s" | format(1, 2) }}|'
               "{% for i in range(3) %}{{ i }}{% endfor %}", {}) == "3|   7|1-2|012"


def test_locale_fallback_drops_one_subtag_at_a_time_then_takes_the_default():
    assert select_locale(["zh-Hant", "zh", "en"], "zh-Hant-TW", "en") == "zh-Hant"
    assert select_locale(["ko", "en"], "KO-kr", "en") == "ko"
    assert select_locale(["en", "de"], "fr-CA", "de") == "de"
    assert select_locale(["en"], None, "de") == "en"
    with pytest.raises(ValueError):
        select_locale([], "en", "en")

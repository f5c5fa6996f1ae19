"""The admin's analytics page of a template (``/admin/notify/template/<id>/analytics/``, linked
from its change page): a chart per metric over the days, a line per A/B variant; the period's
totals and rates; and the variants of one version compared (sent, opened, clicked, their rates,
and whether each differs from the first variant by more than chance: notify.abtest).

Everything comes from notify.analytics (the daily counts, never the delivery tables), drawn on
the server (notify.svgchart): the page runs no script and loads nothing from elsewhere.
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping

from django import forms

from channels import registry

from . import abtest, analytics, svgchart
from .models import Template

#: The metrics charted over time (the totals table shows every one).
CHARTED = ("accepted", "sent", "failed", "delivered", "bounced", "opened", "clicked", "unsubscribed")
#: The rates the variant comparison tests, each as (rate, successes, trials).
COMPARED = (("open_rate", "opened", "sent"), ("click_rate", "clicked", "sent"))
#: Days shown without a choice, today (UTC) included.
DEFAULT_DAYS = 30
MAX_DAYS = 366
NO_VARIANT = "(no variant)"


class AnalyticsForm(forms.Form):
    """The page's filters (GET): the days, one version or all, one channel or all."""

    start = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    version = forms.TypedChoiceField(coerce=int, empty_value=None, required=False)
    channel = forms.ChoiceField(required=False)

    def __init__(self, template: Template, data: Mapping[str, Any] | None = None):
        # Always bound: no parameters at all is the default view, not a form to fill in first.
        super().__init__(dict(data.items()) if data is not None else {})
        numbers = list(template.versions.order_by("-number").values_list("number", flat=True))
        self.fields["version"].choices = [("", "every version")] + [(n, f"v{n}") for n in numbers]
        self.fields["channel"].choices = [("", "every channel")] + [(c, c) for c in registry.channels()]

    def clean(self):
        data = super().clean()
        today = datetime.datetime.now(datetime.timezone.utc).date()
        end = data.get("end") or today
        start = data.get("start") or end - datetime.timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise forms.ValidationError("“From” is after “To”.")
        if (end - start).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Show at most {MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        return data


def page(template: Template, query: Mapping[str, Any]) -> dict[str, Any]:
    """The page's context for ``template`` and the GET parameters ``query``: ``form``,
    ``complete_until`` (notify.analytics.rolled_up_to) and, when the form is valid, ``days``
    (the period), ``charts`` (``[{"metric", "svg", "legend": [(name, colour)]}]``), ``totals`` (``[{"metric", "count"}]``), ``rates`` (``[{"rate", "value"}]``),
    ``comparison`` (see :func:`compare_variants`, None without a version with variants)."""
    form = AnalyticsForm(template, query)
    if not form.is_valid():
        return {"form": form, "complete_until": analytics.rolled_up_to()}
    start, end = form.cleaned_data["start"], form.cleaned_data["end"]
    version, channel = form.cleaned_data["version"], form.cleaned_data["channel"] or None
    days = [start + datetime.timedelta(days=i) for i in range((end - start).days + 1)]
    rows = analytics.report(template.app_id, start, end, ("day", "variant"), template_id=template.id,
                            version=version, channel=channel)
    variants = sorted({row.key["variant"] for row in rows}) or [""]
    by_day = {(row.key["day"], row.key["variant"]): row.counts for row in rows}
    labels = [day.isoformat() for day in days]
    charts = []
    for metric in CHARTED:
        series = {variant or NO_VARIANT: [by_day.get((day, variant), {}).get(metric, 0) for day in days]
                  for variant in variants}
        charts.append({"metric": metric, "svg": svgchart.line_chart(labels, series, chart_id=metric),
                       "legend": [(name, svgchart.color(i)) for i, name in enumerate(series)]})
    totals = analytics.total(rows)
    return {
        "form": form, "days": days, "charts": charts, "complete_until": analytics.rolled_up_to(),
        "totals": [{"metric": metric, "count": totals[metric]} for metric in analytics.METRICS],
        "rates": [{"rate": rate, "value": value, "shown": percent(value)} for rate, value in analytics.rates(totals).items()],
        "comparison": compare_variants(template, start, end, version, channel),
    }


def compare_variants(template: Template, start: datetime.date, end: datetime.date, version: int | None,
                     channel: str | None) -> dict[str, Any] | None:
    """The variants of one version side by side: ``version`` (the one chosen, else the newest
    with variants), ``control`` (its first variant, the one the others are tested against) and
    ``rows``: per variant its ``name``, ``sent``, ``opened``, ``clicked``, ``open_rate``,
    ``click_rate`` (as :func:`percent` shows them) and, for the others, ``tests`` (rate → notify.abtest.Comparison). None when
    that version has no variants."""
    versions = template.versions.exclude(variants=[]).order_by("-number")
    chosen = versions.filter(number=version).first() if version is not None else versions.first()
    if chosen is None:
        return None
    names = [variant["name"] for variant in chosen.variants]
    rows = analytics.report(template.app_id, start, end, ("variant",), template_id=template.id,
                            version=chosen.number, channel=channel)
    counts = {row.key["variant"]: row.counts for row in rows}
    empty = dict.fromkeys(analytics.METRICS, 0)
    control = counts.get(names[0], empty)
    out = []
    for name in names + sorted(set(counts) - set(names)):
        mine = counts.get(name, empty)
        rates = analytics.rates(mine)
        row = {"name": name or NO_VARIANT, "sent": mine["sent"], "opened": mine["opened"], "clicked": mine["clicked"],
               "open_rate": percent(rates["open_rate"]), "click_rate": percent(rates["click_rate"]), "tests": {}}
        if name != names[0]:
            row["tests"] = {rate: abtest.compare(control[successes], control[trials], mine[successes], mine[trials])
                            for rate, successes, trials in COMPARED}
        out.append(row)
    return {"version": chosen.number, "control": names[0], "rows": out}


def percent(rate: float | None) -> str:
    """A rate as the page shows it: ``"12.35%"``, or ``"–"`` when undefined."""
    return "–" if rate is None else f"{rate * 100:.2f}%"

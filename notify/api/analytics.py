"""``GET /api/v1/analytics``: the caller's app's counts and rates per template, version, A/B
variant, channel and day (notify.analytics), filtered and grouped by query parameters, as JSON
or CSV (``?format=csv`` or ``Accept: text/csv``). Reads the daily counts only, never the
delivery tables; another app's numbers are never in them (every read is by the caller's app).
"""

from __future__ import annotations

import csv
import datetime
import io

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import analytics, scopes
from ..models import Template
from . import serializers as s
from .template_serializers import ApiError

#: The longest period one request may cover, in days.
MAX_DAYS = 366
#: Without ``from``/``to``: the last 30 UTC days, today included.
DEFAULT_DAYS = 30


class CSVRenderer(renderers.BaseRenderer):
    """A report (the JSON body of :class:`AnalyticsView`) as CSV: a header, then one line per
    row: the grouped-by columns, every count, every rate (empty when undefined)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return report_csv(data).encode()


def report_csv(body: dict) -> str:
    """The CSV text of a report body (see :class:`CSVRenderer`); ``None`` is written empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    groups = list(body["group_by"])
    writer.writerow(groups + list(analytics.METRICS) + list(analytics.RATES))
    for row in body["rows"]:
        writer.writerow([_cell(row[g]) for g in groups] + [row["counts"][m] for m in analytics.METRICS]
                        + [_cell(row["rates"][r]) for r in analytics.RATES])
    return out.getvalue()


def _cell(value) -> str:
    return "" if value is None else str(value)


class AnalyticsQuery(s.StrictSerializer):
    """The query parameters; ``from`` and ``to`` are added in :meth:`get_fields` (``from`` is a
    Python keyword)."""

    template = serializers.SlugField(max_length=100, required=False)
    version = serializers.IntegerField(min_value=1, max_value=2_147_483_647, required=False)
    variant = serializers.CharField(max_length=32, required=False, allow_blank=True)
    channel = serializers.ChoiceField(s.CHANNEL_CHOICES, required=False)
    group_by = serializers.CharField(max_length=100, required=False, allow_blank=True)
    format = serializers.ChoiceField(["json", "csv"], required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateField(required=False, input_formats=["%Y-%m-%d"])
        fields["to"] = serializers.DateField(required=False, input_formats=["%Y-%m-%d"])
        return fields

    def validate_group_by(self, value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in analytics.GROUPS]
        if unknown:
            raise serializers.ValidationError(
                f"not a group: {', '.join(unknown)}; group by any of {', '.join(analytics.GROUPS)}",
                code="invalid_choice")
        if "version" in names and "template" not in names:
            names.append("template")  # a version number means something only with its template
        return [group for group in analytics.GROUPS if group in names]

    def validate(self, attrs):
        today = datetime.datetime.now(datetime.timezone.utc).date()
        last = attrs.get("to") or (today if "from" not in attrs
                                   else min(today, attrs["from"] + datetime.timedelta(days=DEFAULT_DAYS - 1)))
        first = attrs.get("from") or last - datetime.timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise serializers.ValidationError({"from": [f"{first} is after `to` ({last})"]}, code="from_after_to")
        if (last - first).days + 1 > MAX_DAYS:
            raise serializers.ValidationError({"to": [f"at most {MAX_DAYS} days from `from`"]},
                                              code="range_too_long")
        if "version" in attrs and "template" not in attrs:
            raise serializers.ValidationError({"version": ["give `template` with `version`"]},
                                              code="requires_template")
        attrs["from"], attrs["to"] = first, last
        attrs.setdefault("group_by", [])
        return attrs


def _query_parameter(name: str, kind, description: str, **extra) -> OpenApiParameter:
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, required=False, description=description, **extra)


# One field per metric and per rate, so the schema names each (made from the lists, which stay
# the one place they are written).
AnalyticsCounts = type("AnalyticsCounts", (serializers.Serializer,),
                       {metric: serializers.IntegerField(min_value=0) for metric in analytics.METRICS})
AnalyticsRates = type("AnalyticsRates", (serializers.Serializer,), {
    rate: serializers.FloatField(allow_null=True, help_text=f"{numerator} / {denominator}")
    for rate, (numerator, denominator) in analytics.RATES.items()})


class AnalyticsRow(serializers.Serializer):
    day = serializers.DateField(required=False, help_text="with `group_by=day`: the UTC day the notifications "
                                                          "were accepted")
    template = serializers.CharField(required=False, allow_null=True,
                                     help_text="with `group_by=template`: its name; null for sends with content "
                                               "given in the call")
    version = serializers.IntegerField(required=False, allow_null=True)
    variant = serializers.CharField(required=False, allow_null=True, help_text="null: no A/B variant")
    channel = serializers.CharField(required=False)
    counts = AnalyticsCounts()
    rates = AnalyticsRates()


class AnalyticsTotals(serializers.Serializer):
    counts = AnalyticsCounts()
    rates = AnalyticsRates()


class AnalyticsReport(serializers.Serializer):
    from_ = serializers.DateField()
    to = serializers.DateField()
    group_by = serializers.ListField(child=serializers.ChoiceField(analytics.GROUPS))
    filters = serializers.DictField(help_text="the filters applied (`template`, `version`, `variant`, `channel`)")
    complete_until = serializers.DateTimeField(allow_null=True, help_text="the counts hold everything recorded "
                                                                          "before this instant (the last rollup)")
    rows = AnalyticsRow(many=True)
    totals = AnalyticsTotals()

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


_EXAMPLE_COUNTS = {"accepted": 1000, "sent": 990, "failed": 6, "suppressed": 4, "cancelled": 0, "replayed": 0,
                   "delivered": 961, "undelivered": 2, "bounced": 9, "complained": 1, "opened": 312, "clicked": 57,
                   "unsubscribed": 3}
EXAMPLE = {
    "from": "2026-11-01", "to": "2026-11-30", "group_by": ["variant"],
    "filters": {"template": "order-shipped", "version": 2, "variant": None, "channel": "email"},
    "complete_until": "2026-11-30T23:58:00Z",
    "rows": [{"variant": "a", "counts": _EXAMPLE_COUNTS, "rates": analytics.rates(_EXAMPLE_COUNTS)}],
    "totals": {"counts": _EXAMPLE_COUNTS, "rates": analytics.rates(_EXAMPLE_COUNTS)},
}

PARAMETERS = [
    _query_parameter("from", OpenApiTypes.DATE, "first UTC day (`YYYY-MM-DD`) of the notifications' accept day; "
                                                f"default: {DEFAULT_DAYS - 1} days before `to`"),
    _query_parameter("to", OpenApiTypes.DATE, f"last UTC day, included; default: today (at most {MAX_DAYS} days "
                                              "from `from`)"),
    _query_parameter("template", OpenApiTypes.STR, "only this template (its name)"),
    _query_parameter("version", OpenApiTypes.INT, "only this version of `template`"),
    _query_parameter("variant", OpenApiTypes.STR, "only this A/B variant; empty: only sends without one"),
    _query_parameter("channel", OpenApiTypes.STR, "only this channel", enum=s.CHANNEL_CHOICES),
    _query_parameter("group_by", OpenApiTypes.STR, "comma-separated, any of "
                     f"`{','.join(analytics.GROUPS)}` (`version` groups by template too); none: no rows, the totals only"),
    _query_parameter("format", OpenApiTypes.STR, "`csv` for CSV (as `Accept: text/csv`)", enum=["json", "csv"]),
]


class AnalyticsView(APIView):
    """``GET /api/v1/analytics``: counts and rates of the caller's app (see the module docstring)."""

    required_scope = scopes.ANALYTICS

    renderer_classes = [renderers.JSONRenderer, CSVRenderer]

    @extend_schema(
        tags=["analytics"], summary="Counts and rates per template, version, variant, channel and day",
        parameters=PARAMETERS,
        responses={
            (200, "application/json"): OpenApiResponse(AnalyticsReport, description="counts and rates", examples=[
                OpenApiExample("variants of one version", EXAMPLE, response_only=True)]),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="the rows as CSV: the grouped-by "
                                               "columns, every count, every rate"),
            (400, "application/json"): OpenApiResponse(
                ApiError, description="`invalid_request`: a bad filter; `error.reasons` names it and why: invalid, "
                                      "invalid_choice, from_after_to, range_too_long, requires_template, "
                                      "unknown_template"),
        })
    def get(self, request):
        query = AnalyticsQuery(data={k: v for k, v in request.query_params.items()})
        query.is_valid(raise_exception=True)
        params = query.validated_data
        app_id = request.user.app_id
        template_id = None
        if "template" in params:
            template_id = Template.objects.filter(app_id=app_id, name=params["template"]).values_list(
                "id", flat=True).first()
            if template_id is None:
                raise serializers.ValidationError({"template": [f"no template named {params['template']!r}"]},
                                                  code="unknown_template")
        group_by = params["group_by"]
        rows = analytics.report(app_id, params["from"], params["to"], group_by, template_id=template_id,
                                version=params.get("version"), variant=params.get("variant"),
                                channel=params.get("channel"))
        names = dict(Template.objects.filter(app_id=app_id, id__in={r.key["template"] for r in rows
                                                                    if r.key.get("template")})
                     .values_list("id", "name")) if "template" in group_by else {}
        totals = analytics.total(rows)
        complete = analytics.rolled_up_to()
        body = {
            "from": params["from"].isoformat(), "to": params["to"].isoformat(), "group_by": group_by,
            "filters": {"template": params.get("template"), "version": params.get("version"),
                        "variant": params.get("variant"), "channel": params.get("channel")},
            "complete_until": complete.isoformat().replace("+00:00", "Z") if complete else None,
            "rows": [_row(row, group_by, names) for row in rows if group_by],
            "totals": {"counts": totals, "rates": analytics.rates(totals)},
        }
        headers = {}
        if request.accepted_renderer.format == "csv":
            headers["Content-Disposition"] = f'attachment; filename="analytics-{body["from"]}-{body["to"]}.csv"'
        return Response(body, headers=headers)

    def perform_content_negotiation(self, request, force=False):
        # An unknown ?format= is a bad filter like the others (DRF would answer 404).
        if not force and request.query_params.get("format") not in (None, "json", "csv"):
            raise serializers.ValidationError({"format": ["one of json, csv"]}, code="invalid_choice")
        return super().perform_content_negotiation(request, force)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code >= 400 or request.method == "OPTIONS":
            # Errors keep the API's one JSON shape, CSV asked for or not; so does OPTIONS, whose
            # body is DRF's description of the view, not a report (as CSV it was a 500).
            response.accepted_renderer = renderers.JSONRenderer()
            response.accepted_media_type = "application/json"
            response.renderer_context = self.get_renderer_context()
        return response


def _row(row: analytics.Row, group_by: list[str], names: dict[int, str]) -> dict:
    out = {}
    for group in group_by:
        value = row.key[group]
        if group == "day":
            value = value.isoformat()
        elif group == "template":
            value = names.get(value) if value else None
        elif group == "version":
            value = value or None
        elif group == "variant":
            value = value or None
        out[group] = value
    return out | {"counts": row.counts, "rates": row.rates}

"""The operators' views: ``/metrics`` for Prometheus and the staff-only dashboard.

The dashboard reads the same scrape as ``/metrics`` (:func:`notify.metrics.registry`), condensed
per channel by :func:`snapshot`; its page polls that as JSON and draws the rates itself (the
difference between two polls), so its numbers and Prometheus' are one set of numbers.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import defaultdict

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
# The classic text format (version 0.0.4), which every Prometheus 2 reads; generate_latest writes it.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from . import metrics

#: Quantiles the dashboard shows of each latency histogram.
QUANTILES = (0.5, 0.95, 0.99)
#: Outcome statuses the dashboard counts per channel.
OUTCOMES = ("queued", "sent", "retrying", "failed", "suppressed", "expired", "dead_lettered")
LATEST_FAILURES = 10


def metrics_allowed(request: HttpRequest) -> bool:
    """True if the caller may read ``/metrics``: it presents ``NOTIFY_METRICS_TOKEN`` as a bearer
    token, or its address (``REMOTE_ADDR``: the peer, not a forwarded header) is in
    ``NOTIFY_METRICS_ALLOW``."""
    token = settings.NOTIFY_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(net, strict=False) for net in settings.NOTIFY_METRICS_ALLOW)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: Prometheus' text format; 403 for a caller :func:`metrics_allowed` refuses."""
    if not metrics_allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``[(upper bound, count), ...]`` buckets, interpolated
    linearly within its bucket as Prometheus' ``histogram_quantile`` does; None with no
    observations. The ``+Inf`` bucket answers its lower bound."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def snapshot() -> dict:
    """The numbers of one scrape, per channel, for the dashboard::

        {"time": epoch seconds,
         "channels": {channel: {"queued"|"sent"|"retrying"|"failed"|"suppressed"|"expired"|"dead_lettered": total,
                                "queue": messages, "consumers": n, "oldest_age": s, "dead_letters": messages,
                                "outbox": rows, "call_seconds": {"p50", "p95", "p99"}, "accept_to_sent_seconds": {...}}},
         "breakers": {scope: "closed" | "half_open" | "open"},
         "relays": n, "accepted": total, "refused": total,
         "sources": {source: 0 | 1},
         "failures": [{"at", "delivery_id", "channel", "provider", "status", "reason", "provider_status"}]}
    """
    channels = {c: {name: 0 for name in OUTCOMES} | {"queue": 0, "consumers": 0, "oldest_age": 0.0, "dead_letters": 0,
                                                     "outbox": 0}
                for c in settings.NOTIFY_CHANNELS}
    buckets: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    out = {"time": time.time(), "channels": channels, "breakers": {}, "relays": 0, "accepted": 0, "refused": 0,
           "sources": {}}
    for family in metrics.registry().collect():
        for s in family.samples:
            labels, channel = s.labels, s.labels.get("channel")
            row = channels.get(channel)
            if s.name == "notify_deliveries_total" and row is not None and labels["status"] in row:
                row[labels["status"]] += int(s.value)
            elif s.name.endswith("_bucket") and row is not None:
                buckets[(s.name[:-len("_bucket")], channel)][float(labels["le"])] += s.value
            elif s.name == "notify_queue_messages" and row is not None:
                row["queue" if labels["queue"] == channel else "dead_letters"] = int(s.value)
            elif s.name == "notify_queue_consumers" and row is not None and labels["queue"] == channel:
                row["consumers"] = int(s.value)
            elif s.name == "notify_queue_oldest_message_age_seconds" and row is not None and labels["queue"] == channel:
                row["oldest_age"] = round(s.value, 1)
            elif s.name == "notify_outbox_deliveries" and row is not None:
                row["outbox"] = int(s.value)
            elif s.name == "notify_circuit_breaker_state" and s.value == 1:
                out["breakers"][labels["scope"]] = labels["state"]
            elif s.name == "notify_relays":
                out["relays"] = int(s.value)
            elif s.name == "notify_notifications_accepted_total":
                out["accepted"] += int(s.value)
            elif s.name == "notify_notifications_refused_total":
                out["refused"] += int(s.value)
            elif s.name == "notify_metrics_source_up":
                out["sources"][labels["source"]] = int(s.value)
    for (name, channel), counts in buckets.items():
        key = {"notify_provider_call_seconds": "call_seconds", "notify_accept_to_sent_seconds": "accept_to_sent_seconds"}[name]
        cumulative = list(counts.items())
        channels[channel][key] = {f"p{round(q * 100)}": histogram_quantile(q, cumulative) for q in QUANTILES}
    for row in channels.values():
        for key in ("call_seconds", "accept_to_sent_seconds"):
            row.setdefault(key, {f"p{round(q * 100)}": None for q in QUANTILES})
    out["failures"] = latest_failures()
    return out


def latest_failures(limit: int = LATEST_FAILURES) -> list[dict]:
    """The last ``limit`` delivery-log rows that ended a delivery failed or dead-lettered, newest
    first (no addresses: ids, channel, provider, reason)."""
    from .models import DeliveryLog

    rows = (DeliveryLog.objects.filter(to_status__in=("failed", "dead_lettered")).select_related("delivery")
            .order_by("-at")[:limit])
    return [{"at": r.at.isoformat(), "delivery_id": str(r.delivery_id), "channel": r.delivery.channel,
             "provider": r.delivery.provider, "status": r.to_status, "reason": r.reason,
             "provider_status": r.provider_status} for r in rows]


@staff_member_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """``GET /ops/dashboard``: the operators' page (staff only; others go to the admin login)."""
    return render(request, "notify/dashboard.html", {"refresh_ms": 2000, "channels": list(settings.NOTIFY_CHANNELS)})


@staff_member_required
@require_GET
def dashboard_data(request: HttpRequest) -> JsonResponse:
    """``GET /ops/dashboard/data``: :func:`snapshot` as JSON (staff only)."""
    return JsonResponse(snapshot())

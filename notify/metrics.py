"""Prometheus metrics: every metric's one definition, the two places that count, and the scrape.

Counters and histograms live in prometheus-client's *multiprocess mode*: each process (gunicorn
worker, Celery prefork child, relay) writes its samples to memory-mapped files in
``NOTIFY_METRICS_DIR`` (settings set ``PROMETHEUS_MULTIPROC_DIR`` from it before anything imports
prometheus_client), and ``/metrics`` adds the files up, so a scrape sees the sum over every process
of the host whichever gunicorn worker answers it. Processes that ended keep their counts (a counter
must not go down when a worker is recycled).

What is a state rather than an event (queue depth and oldest message, the outbox backlog, circuit
breakers, live relays) is read at scrape time by :class:`LiveCollector`, registered only on the
scrape's own registry: from RabbitMQ's management API, PostgreSQL and Redis.

Counting happens in two places only: :func:`record_accept` (notify.accept, once the rows of
accepted notifications are committed) and :func:`record_delivery` (notify.send, where every
outcome of a send is written). Refusals of send requests are counted by :func:`record_refusal`
from the API's error handler.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.parse
from typing import Any, Iterable

import requests
from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily


def process_identifier(pid: int | None = None) -> str:
    """What names a process's sample files: host name and pid, so that containers (each with
    its own pid 1, 7, ...) can share one ``NOTIFY_METRICS_DIR`` volume without two processes
    writing one file."""
    return f"{socket.gethostname()}-{os.getpid() if pid is None else pid}"


# Multiprocess values whatever was imported first: loading the settings (reading one) sets
# PROMETHEUS_MULTIPROC_DIR, which the values read when each metric is created below.
METRICS_DIR = settings.NOTIFY_METRICS_DIR
values.ValueClass = values.MultiProcessValue(process_identifier)

log = logging.getLogger("notify.send")
accept_log = logging.getLogger("notify.accept")

#: Seconds buckets of a provider call (the adapters' timeouts are 10 s by default).
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Seconds buckets from accept to sent (retries may take hours).
ACCEPT_TO_SENT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600)

NOTIFICATIONS_ACCEPTED = Counter(
    "notify_notifications_accepted", "Send requests accepted (one per notification written).")
NOTIFICATIONS_REFUSED = Counter(
    "notify_notifications_refused", "Send requests refused by the API, by the error code answered.", ["reason"])
DELIVERIES = Counter(
    "notify_deliveries",
    "Deliveries entering a status: at accept (queued, suppressed, retrying, standby; provider empty) and at "
    "each send outcome (sent, retrying, failed, suppressed, expired, dead_lettered, scheduled).",
    ["channel", "provider", "status", "reason"])
PROVIDER_LATENCY = Histogram(
    "notify_provider_call_seconds", "Seconds one provider call took (request to classified answer).",
    ["channel", "provider"], buckets=CALL_BUCKETS)
ACCEPT_TO_SENT = Histogram(
    "notify_accept_to_sent_seconds", "Seconds from the API accepting a delivery to its provider accepting it.",
    ["channel"], buckets=ACCEPT_TO_SENT_BUCKETS)

DELIVERY_EVENTS = Counter(
    "notify_delivery_events",
    "Delivery events recorded (each once per delivery): delivered, undelivered, bounced, complained, opened, "
    "clicked, unsubscribed, by who reported them (a provider, tracking, api, unsubscribe).",
    ["channel", "source", "kind"])


def _reason_label(reason: str | None) -> str:
    """Reasons are the service's own codes or a provider's error code; ``retries_exhausted:503``
    counts as ``retries_exhausted`` so the label keeps a small set of values."""
    return (reason or "").split(":", 1)[0][:64]


def record_accept(planned: Iterable[Any]) -> None:
    """Count and log committed notifications (``notify.accept.Planned`` objects): one
    ``notify_notifications_accepted`` each, and each delivery row under the status it was
    written with (no provider yet)."""
    for item in planned:
        NOTIFICATIONS_ACCEPTED.inc()
        for d in item.deliveries:
            DELIVERIES.labels(d.channel, "", d.status, _reason_label(d.reason)).inc()
        accept_log.info("notification accepted", extra={
            "notification_id": str(item.notification.id),
            "deliveries": [{"delivery_id": str(d.id), "channel": d.channel, "status": d.status,
                            "reason": d.reason or None} for d in item.deliveries]})


def record_refusal(view: Any, response: Any) -> None:
    """Count a refused send request: ``response`` is the API's error response (``{"error":
    {"code"}}``) to a POST on a view that sends (marked ``counts_as_send = True``)."""
    request = getattr(view, "request", None)
    if response is None or not getattr(view, "counts_as_send", False) or getattr(request, "method", "") != "POST":
        return
    code = (response.data or {}).get("error", {}).get("code", "error") if isinstance(response.data, dict) else "error"
    NOTIFICATIONS_REFUSED.labels(code).inc()


#: Characters of a provider's answer kept in the outcome's log line.
ANSWER_LOG_CHARS = 500


def record_delivery(c: Any, status: str, reason: str, provider: str | None, duration_ms: float | None,
                    result: Any = None) -> None:
    """Count and log one outcome of a send attempt (``c``: the ``notify.send.Claim``;
    ``result``: the adapter's ``channels.base.Result`` when a provider answered).

    Increments ``notify_deliveries`` (provider empty when none was called), observes the
    provider call's duration in ``notify_provider_call_seconds`` when one was made and, for
    ``sent``, the delivery's age in ``notify_accept_to_sent_seconds``; writes one INFO line with
    the notification and delivery ids, channel, provider, attempt and outcome, and the
    provider's HTTP status and (when not sent) its answer, which may quote the address: the log
    filter masks it (notify.logmask).
    """
    DELIVERIES.labels(c.channel, provider or "", status, _reason_label(reason)).inc()
    if duration_ms is not None and provider:
        PROVIDER_LATENCY.labels(c.channel, provider).observe(duration_ms / 1000)
    age = None
    if status == "sent" and c.created_at is not None:
        from django.utils import timezone

        age = (timezone.now() - c.created_at).total_seconds()
        ACCEPT_TO_SENT.labels(c.channel).observe(max(age, 0.0))
    log.info("delivery %s", status, extra={
        "notification_id": str(c.notification_id), "delivery_id": str(c.id), "channel": c.channel,
        "provider": provider or None, "attempt": c.attempt, "outcome": status, "reason": reason or None,
        "duration_ms": round(duration_ms, 1) if duration_ms is not None else None,
        "accept_to_sent_s": round(age, 3) if age is not None else None,
        "provider_status": result.status if result is not None else None,
        "provider_message_id": result.provider_message_id if result is not None else None,
        "answer": json.dumps(result.raw, default=str, ensure_ascii=False)[:ANSWER_LOG_CHARS]
        if result is not None and status != "sent" and result.raw else None})


def record_event(channel: str, source: str, kind: str) -> None:
    """Count one recorded delivery event in ``notify_delivery_events`` (notify.receipts)."""
    DELIVERY_EVENTS.labels(channel, source, kind).inc()


# -- live state, read at scrape time ----------------------------------------------------------
#: The Redis sorted set in which running relays announce themselves (member: process, score: time).
_RELAY_KEY = "relay-alive"
#: Seconds a relay's announcement lasts: it renews it every round (at least once a second).
RELAY_ALIVE_TTL = 15
_relay_announced = 0.0


def relay_heartbeat() -> None:
    """Announce this relay process as alive (its time in a Redis sorted set; the scrape counts
    those of the last ``RELAY_ALIVE_TTL`` seconds, ``notify_relays``), at most every few seconds.
    Redis trouble is logged and ignored: the relay's job is publishing."""
    global _relay_announced
    now = time.monotonic()
    if now - _relay_announced < RELAY_ALIVE_TTL / 3:
        return
    from django_redis import get_redis_connection

    from .cache import redis_key

    try:
        get_redis_connection("default").zadd(redis_key(_RELAY_KEY), {process_identifier(): time.time()})
        _relay_announced = now
    except Exception:  # noqa: BLE001
        log.warning("could not announce the relay in Redis", exc_info=True)


def rabbitmq_queues() -> list[dict]:
    """The broker vhost's queues from RabbitMQ's management HTTP API (``NOTIFY_BROKER_API_URL``,
    with its credentials, else the broker URL's): ``[{"name", "messages", "consumers",
    "head_message_timestamp"?}]``. Counts are RabbitMQ's statistics, refreshed every
    ``collect_statistics_interval`` (5 s by default).

    The head message's age needs no peek (a get with requeue would reorder the queue and mark
    the message redelivered): the outbox publishes every task with an AMQP ``timestamp``
    (notify.outbox), and RabbitMQ reports the head message's as ``head_message_timestamp``.

    Raises:
        requests.RequestException: the management API is unreachable or answers an error.
    """
    # A cluster's broker URL lists its nodes (``amqp://a//;amqp://b//``): the vhost is the first's.
    broker = urllib.parse.urlsplit(settings.NOTIFY_BROKER_URL.split(";")[0])
    api = urllib.parse.urlsplit(settings.NOTIFY_BROKER_API_URL)
    vhost = urllib.parse.unquote(broker.path[1:]) if broker.path not in ("", "/") else "/"
    user, password = (api.username, api.password) if api.username else (broker.username, broker.password)
    auth = (urllib.parse.unquote(user or "guest"), urllib.parse.unquote(password or "guest"))
    base = urllib.parse.urlunsplit((api.scheme, api.hostname + (f":{api.port}" if api.port else ""),
                                    api.path.rstrip("/"), "", ""))
    response = requests.get(f"{base}/queues/{urllib.parse.quote(vhost, safe='')}", auth=auth, timeout=3, params={
        "columns": "name,messages,consumers,head_message_timestamp"})
    response.raise_for_status()
    return response.json()


def outbox_backlog() -> dict[str, tuple[int, float]]:
    """``{channel: (deliveries queued and not yet published, seconds the oldest has waited)}``,
    single rows and a broadcast's batch rows (notify.models.OutboxBatch) together."""
    from django.db.models import Count, F, Func, IntegerField, Min, Sum
    from django.utils import timezone

    from .models import Delivery, DeliveryStatus, OutboxBatch

    now = timezone.now()
    single = (Delivery.objects.filter(status=DeliveryStatus.QUEUED, published_at__isnull=True)
              .values("channel").annotate(n=Count("id"), oldest=Min("created_at")).order_by())
    batched = (OutboxBatch.objects.values("channel").order_by()
               .annotate(n=Sum(Func(F("delivery_ids"), function="cardinality", output_field=IntegerField())),
                         oldest=Min("created_at")))
    backlog: dict[str, tuple[int, float]] = {}
    for r in [*single, *batched]:
        count, waited = backlog.get(r["channel"], (0, 0.0))
        backlog[r["channel"]] = (count + r["n"], max(waited, (now - r["oldest"]).total_seconds()))
    return backlog


#: Seconds a scope that tripped its breaker stays listed after it closed (Web Push's push services).
BREAKER_LISTED_FOR = 24 * 3600


def breaker_states() -> dict[str, str]:
    """``{scope: "closed" | "half_open" | "open"}`` for every configured provider and every
    other scope that tripped within ``BREAKER_LISTED_FOR`` seconds (Web Push's push services)."""
    from django_redis import get_redis_connection

    from . import breaker

    redis = get_redis_connection("default")
    now = time.time()
    redis.zremrangebyscore(breaker.tripped_scopes_key(), 0, now - BREAKER_LISTED_FOR)
    scopes = {p for providers in settings.NOTIFY_CHANNEL_PROVIDERS.values() for p in providers}
    scopes |= {s.decode() for s in redis.zrange(breaker.tripped_scopes_key(), 0, -1)}
    breaker._local.clear()  # the scrape wants Redis's state now, not this process's last look
    return breaker.states(sorted(scopes))


def live_relays() -> int:
    """Relay processes that announced themselves within ``RELAY_ALIVE_TTL`` seconds."""
    from django_redis import get_redis_connection

    from .cache import redis_key

    redis = get_redis_connection("default")
    redis.zremrangebyscore(redis_key(_RELAY_KEY), 0, time.time() - RELAY_ALIVE_TTL)
    return redis.zcard(redis_key(_RELAY_KEY))


class LiveCollector:
    """Gauges read when scraped (see the module doc). A source that cannot be read is left out
    of the scrape and ``notify_metrics_source_up{source}`` says 0, so alerts on it do not
    silently read zero."""

    def collect(self):
        from .queues import MAINTENANCE_QUEUE, dead_letter_queue

        up = GaugeMetricFamily("notify_metrics_source_up", "1 if the source could be read for this scrape.",
                               labels=["source"])
        channels = list(settings.NOTIFY_CHANNELS)
        # The maintenance queue (dispatcher) has no channel: its consumers still tell whether it runs.
        channel_of = {c: c for c in channels} | {dead_letter_queue(c): c for c in channels} | {MAINTENANCE_QUEUE: ""}

        try:
            queues = [q for q in rabbitmq_queues() if q["name"] in channel_of]
        except Exception:  # noqa: BLE001
            log.warning("metrics: RabbitMQ management API unreachable", exc_info=True)
            up.add_metric(["rabbitmq"], 0)
        else:
            up.add_metric(["rabbitmq"], 1)
            depth = GaugeMetricFamily("notify_queue_messages", "Messages on a channel's queue (RabbitMQ).",
                                      labels=["queue", "channel"])
            consumers = GaugeMetricFamily("notify_queue_consumers", "Consumers of a queue (one per Celery worker node, whatever its pool size).",
                                          labels=["queue", "channel"])
            age = GaugeMetricFamily("notify_queue_oldest_message_age_seconds",
                                    "Seconds since the message at the head of the queue was published "
                                    "(its AMQP timestamp); 0 when the queue is empty.", labels=["queue", "channel"])
            now = time.time()
            for q in queues:
                labels = [q["name"], channel_of[q["name"]]]
                depth.add_metric(labels, q.get("messages") or 0)
                consumers.add_metric(labels, q.get("consumers") or 0)
                head = q.get("head_message_timestamp")
                age.add_metric(labels, max(now - head, 0.0) if head and q.get("messages") else 0.0)
            yield from (depth, consumers, age)

        try:
            backlog = outbox_backlog()
        except Exception:  # noqa: BLE001
            log.warning("metrics: outbox backlog unreadable", exc_info=True)
            up.add_metric(["postgresql"], 0)
        else:
            up.add_metric(["postgresql"], 1)
            rows = GaugeMetricFamily("notify_outbox_deliveries", "Deliveries committed and not yet published.",
                                     labels=["channel"])
            oldest = GaugeMetricFamily("notify_outbox_oldest_age_seconds",
                                       "Seconds the oldest unpublished delivery has waited; 0 when none.",
                                       labels=["channel"])
            for channel in channels:
                n, wait = backlog.get(channel, (0, 0.0))
                rows.add_metric([channel], n)
                oldest.add_metric([channel], wait)
            yield from (rows, oldest)

        try:
            states = breaker_states()
            relays = live_relays()
        except Exception:  # noqa: BLE001
            log.warning("metrics: Redis unreachable", exc_info=True)
            up.add_metric(["redis"], 0)
        else:
            up.add_metric(["redis"], 1)
            family = GaugeMetricFamily("notify_circuit_breaker_state",
                                       "1 for the state a provider's circuit breaker is in (scope: the provider, "
                                       "or one push service for Web Push).", labels=["scope", "state"])
            for scope, current in states.items():
                for name in ("closed", "half_open", "open"):
                    family.add_metric([scope, name], 1 if current == name else 0)
            yield family
            yield GaugeMetricFamily("notify_relays", "Outbox relay processes alive (announced in Redis).",
                                    value=relays)
        yield up


def registry() -> CollectorRegistry:
    """A registry for one scrape: every process's counters and histograms added up, plus the
    live gauges."""
    scrape = CollectorRegistry()
    multiprocess.MultiProcessCollector(scrape)
    scrape.register(LiveCollector())
    return scrape


def exposition() -> bytes:
    """The text exposition format of :func:`registry` (what ``/metrics`` answers)."""
    return generate_latest(registry())


def mark_process_dead(pid: int) -> None:
    """Forget the live-gauge files of an ended process (gunicorn's ``child_exit``, Celery's
    ``worker_process_shutdown``); its counters stay counted."""
    multiprocess.mark_process_dead(process_identifier(pid))

"""Liveness and readiness endpoints for load balancers, orchestrators and operators.

``GET /health/live``: the process answers (no dependency is asked), for restarting a hung
process. ``GET /health/ready``: PostgreSQL, RabbitMQ and Redis each answer within
``NOTIFY_HEALTH_TIMEOUT`` seconds, for taking the process out of rotation while one is down;
the answer names what is down. Neither needs an API key.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor, wait

import psycopg
import redis
from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from kombu import Connection
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView


def check_postgresql(timeout: float) -> None:
    """Open a new connection to the default database and run ``SELECT 1``; raises on failure.

    A new connection rather than the request's own: readiness means new connections succeed
    (libpq's ``connect_timeout`` is whole seconds, at least 2)."""
    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=db["USER"],
                         password=db["PASSWORD"], connect_timeout=max(2, math.ceil(timeout))) as conn:
        conn.execute("SELECT 1")


def check_rabbitmq(timeout: float) -> None:
    """Open (and close) an AMQP connection to ``NOTIFY_BROKER_URL``; raises on failure."""
    with Connection(settings.NOTIFY_BROKER_URL, connect_timeout=timeout) as conn:
        conn.connect()


def check_redis(timeout: float) -> None:
    """``PING`` ``NOTIFY_REDIS_URL``; raises on failure."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


#: What readiness checks, in the order its answer lists them.
CHECKS = {"postgresql": check_postgresql, "rabbitmq": check_rabbitmq, "redis": check_redis}


def readiness(timeout: float | None = None) -> dict:
    """Run every check at once, each bounded by ``timeout`` seconds (default
    ``NOTIFY_HEALTH_TIMEOUT``).

    Returns ``{"status": "ready" | "not_ready", "down": [names], "checks": {name: {"ok": bool,
    "ms": int, "error": str (only when not ok)}}}``; a check that has not answered by the
    deadline is down with error ``timeout``.
    """
    timeout = settings.NOTIFY_HEALTH_TIMEOUT if timeout is None else timeout
    started = time.monotonic()
    results: dict[str, dict] = {}
    pool = ThreadPoolExecutor(len(CHECKS), thread_name_prefix="readiness")
    futures = {name: pool.submit(_timed, check, timeout) for name, check in CHECKS.items()}
    # libpq rounds its timeout up to whole seconds: allow for it, then give up on the check.
    wait(futures.values(), timeout=max(2, math.ceil(timeout)) + 0.5)
    for name, future in futures.items():
        if future.done():
            results[name] = future.result()
        else:
            results[name] = {"ok": False, "ms": round((time.monotonic() - started) * 1000), "error": "timeout"}
    pool.shutdown(wait=False, cancel_futures=True)
    down = [name for name, result in results.items() if not result["ok"]]
    return {"status": "not_ready" if down else "ready", "down": down, "checks": results}


def _timed(check, timeout: float) -> dict:
    started = time.monotonic()
    try:
        check(timeout)
    except Exception as exc:  # any failure means down; the answer says which
        return {"ok": False, "ms": round((time.monotonic() - started) * 1000),
                "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000)}


_Check = inline_serializer("HealthCheck", {
    "ok": serializers.BooleanField(),
    "ms": serializers.IntegerField(help_text="milliseconds the check took"),
    "error": serializers.CharField(required=False, help_text="why it is down (only when not ok)"),
})
_Readiness = inline_serializer("Readiness", {
    "status": serializers.ChoiceField(["ready", "not_ready"]),
    "down": serializers.ListField(child=serializers.ChoiceField(list(CHECKS)),
                                  help_text="the services that did not answer, in this order"),
    "checks": serializers.DictField(child=_Check, help_text=f"one entry per service: {', '.join(CHECKS)}"),
})
_READY_EXAMPLE = {"status": "ready", "down": [],
                  "checks": {name: {"ok": True, "ms": 3} for name in CHECKS}}
_NOT_READY_EXAMPLE = {"status": "not_ready", "down": ["rabbitmq"], "checks": {
    "postgresql": {"ok": True, "ms": 4},
    "rabbitmq": {"ok": False, "ms": 1, "error": "ConnectionRefusedError: [Errno 111] Connection refused"},
    "redis": {"ok": True, "ms": 1}}}


class LiveView(APIView):
    """``GET /health/live``: 200 while the process serves requests."""

    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(tags=["health"], summary="Liveness", responses={200: OpenApiResponse(
        inline_serializer("Liveness", {"status": serializers.ChoiceField(["alive"])}),
        examples=[OpenApiExample("alive", {"status": "alive"})])})
    def get(self, request):
        return Response({"status": "alive"})


class ReadyView(APIView):
    """``GET /health/ready``: 200 when PostgreSQL, RabbitMQ and Redis answer, else 503 naming
    what is down (see :func:`readiness`)."""

    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(tags=["health"], summary="Readiness", responses={
        200: OpenApiResponse(_Readiness, description="every service answered",
                             examples=[OpenApiExample("ready", _READY_EXAMPLE)]),
        503: OpenApiResponse(_Readiness, description="a service is down; `down` names it",
                             examples=[OpenApiExample("rabbitmq down", _NOT_READY_EXAMPLE)])})
    def get(self, request):
        result = readiness()
        return Response(result, status=503 if result["down"] else 200, headers={"Cache-Control": "no-store"})

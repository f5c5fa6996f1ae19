"""Behaviour every provider emulator shares: request capture, recording, faults, error answers.

A provider is a subclass of :class:`ProviderApp` (an ASGI app served by hypercorn). For each
request the base class builds an :class:`Exchange`, calls the subclass's :meth:`ProviderApp.handle`
and records the exchange once, whatever happened. Subclasses:

- raise :class:`Reject` for any refusal; the base class renders it with the provider's real error
  body through :meth:`ProviderApp.error_body`;
- call :meth:`ProviderApp.apply_faults` once they know the recipient (``ex.to``), which sleeps the
  rule's latency and raises the fault's :class:`Reject` unless it is ``after_accept``;
- finish with :meth:`ProviderApp.accept`, which marks the message delivered and, for an
  ``after_accept`` fault, answers the fault's error instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from .faults import Applied
from .ports import normalize_host

if TYPE_CHECKING:
    from .state import SandboxState

log = logging.getLogger("sandbox")


#: Hosts the sandbox always calls back (Twilio callbacks, SNS subscriptions).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def callback_allowed(url: str, allowed_hosts: frozenset[str]) -> bool:
    """True when the sandbox may call ``url``: its host is loopback or one of ``allowed_hosts``
    (``--callback-hosts``, normalized; exact host match, any port and scheme). A URL
    ``urlsplit`` cannot parse raises ``ValueError``."""
    host = urlsplit(url).hostname
    if host in LOOPBACK_HOSTS:
        return True
    if not host or not allowed_hosts:
        return False
    try:
        return normalize_host(host) in allowed_hosts
    except ValueError:
        return False


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer (``application/json``); ``body`` None gives an empty body."""
    content = b"" if body is None else dumps(body)
    return Response(content, status_code=status, headers=headers,
                    media_type="application/json" if body is not None else None)


class Reject(Exception):
    """A refused request.

    Args:
        status: HTTP status (SMTP: reply code).
        reason: the provider's reason / error code string (APNs ``BadDeviceToken``, FCM
            ``INVALID_ARGUMENT``, SES ``MessageRejected``…), recorded as ``reason``.
        message: human text for the body, when the provider's shape has one.
        code: numeric provider code (Twilio ``21211``, Web Push ``errno``).
        retry_after: seconds for the ``Retry-After`` header.
        headers: extra answer headers.
        details: provider-specific extra body fields (e.g. FCM field violations).
        fault: id of the fault rule that caused it, if any.
    """

    def __init__(self, status: int, reason: str | None, message: str | None = None, *,
                 code: int | None = None, retry_after: float | None = None,
                 headers: dict[str, str] | None = None, details: Any = None,
                 fault: int | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.headers = headers or {}
        self.details = details
        self.fault = fault


@dataclass
class Exchange:
    """One request and its outcome, turned into a record by :meth:`to_record`."""

    provider: str
    method: str
    path: str
    http_version: str | None
    headers: dict[str, str]
    raw_body: bytes = b""
    body: Any = None
    to: Any = None
    delivery_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    status: int = 0
    response: Any = None
    accepted: bool = False
    reason: str | None = None
    duplicate_headers: list[str] = field(default_factory=list)
    record: bool = True
    time: float = field(default_factory=time.time)

    def to_record(self) -> dict[str, Any]:
        """The contract's record dict (``seq`` is assigned by the store)."""
        return {
            "seq": 0, "provider": self.provider, "time": self.time, "method": self.method,
            "path": self.path, "http_version": self.http_version, "headers": self.headers,
            "body": self.body, "status": self.status, "response": self.response,
            "accepted": self.accepted, "reason": self.reason, "delivery_id": self.delivery_id,
            "to": self.to, "extra": self.extra,
        }


def default_body(raw: bytes, content_type: str) -> Any:
    """Best-effort parse of a body for the record: JSON, form, text or ``{"base64": ...}``."""
    if not raw:
        return None
    ct = content_type.split(";")[0].strip().lower()
    if ct.endswith("json"):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    if ct == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii"), "length": len(raw)}


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class ProviderApp:
    """Base ASGI app of a provider emulator. Subclasses set :attr:`name` and implement
    :meth:`handle` and :meth:`error_body`."""

    name = "provider"
    #: default reason per status for fault rules that give only a status
    default_reasons: dict[int, str] = {}

    def __init__(self, state: "SandboxState") -> None:
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        headers: dict[str, str] = {}
        dups: list[str] = []
        for k, v in scope["headers"]:
            name = k.decode("latin-1")
            if name in headers:
                dups.append(name)
            headers[name] = v.decode("latin-1")
        path = scope["path"]
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        ex = Exchange(self.name, scope["method"], path, scope.get("http_version"), headers,
                      duplicate_headers=dups)
        try:
            ex.raw_body = await request.body()
            response = await self.handle(request, ex)
        except Reject as rej:
            response = self.reject_response(ex, rej)
        except Exception:  # a bug in the emulator must not kill the connection silently
            log.exception("%s: unhandled error on %s %s", self.name, ex.method, ex.path)
            response = self.reject_response(ex, Reject(500, "InternalServerError", "sandbox bug"))
        if ex.body is None and ex.raw_body:
            ex.body = default_body(ex.raw_body, headers.get("content-type", ""))
        if ex.record:
            self.state.records.add(ex.to_record())
        await response(scope, receive, send)

    # -- to implement ------------------------------------------------------------------------
    async def handle(self, request: Request, ex: Exchange) -> Response:
        """Answer one request; raise :class:`Reject` to refuse it."""
        raise NotImplementedError

    def error_body(self, rej: Reject, ex: Exchange) -> tuple[Any, dict[str, str]]:
        """The provider's error body (JSON-able) and extra headers for ``rej``."""
        raise NotImplementedError

    # -- shared helpers -------------------------------------------------------------------------
    def reject_response(self, ex: Exchange, rej: Reject, accepted: bool = False) -> Response:
        """Render ``rej`` with the provider's error shape and note it in ``ex``."""
        body, headers = self.error_body(rej, ex)
        headers = {**headers, **rej.headers}
        if rej.retry_after is not None:
            headers["retry-after"] = str(rej.retry_after)
        ex.status = rej.status
        ex.response = body
        ex.reason = rej.reason if rej.reason is not None else (
            str(rej.code) if rej.code is not None else None)
        ex.accepted = accepted
        if rej.fault is not None:
            ex.extra["fault_id"] = rej.fault
        if isinstance(body, (bytes, str)):
            content = body.encode() if isinstance(body, str) else body
            return Response(content, status_code=rej.status, headers=headers)
        return json_response(body, rej.status, headers)

    def fault_reject(self, applied: Applied) -> Reject:
        """The :class:`Reject` a fired error rule stands for."""
        rule = applied.error
        assert rule is not None
        reason = rule.reason or self.default_reasons.get(rule.status)
        return Reject(rule.status, reason, rule.message, code=rule.code,
                      retry_after=rule.retry_after, fault=rule.id)

    async def apply_faults(self, ex: Exchange, targets: Any = None) -> Applied | None:
        """Fire the fault rules for this request (recipient ``targets`` or ``ex.to``).

        Sleeps the latency (``asyncio.sleep``), then raises the rule's :class:`Reject` unless the
        rule is ``after_accept``. Returns what fired (for :meth:`accept`), or None.
        """
        applied = self.state.faults.take(self.name, ex.to if targets is None else targets)
        if applied is None:
            return None
        ex.extra["faults"] = applied.ids
        if applied.latency_ms:
            await asyncio.sleep(applied.latency_ms / 1000.0)
        if applied.error is not None and not applied.error.after_accept:
            raise self.fault_reject(applied)
        return applied

    def accept(self, ex: Exchange, response: Response, body: Any,
               applied: Applied | None = None) -> Response:
        """Mark the message delivered; answer ``response`` or the ``after_accept`` fault."""
        ex.accepted = True
        ex.status = response.status_code
        ex.response = body
        if applied is not None and applied.error is not None and applied.error.after_accept:
            ex.extra["accepted_response"] = body
            return self.reject_response(ex, self.fault_reject(applied), accepted=True)
        return response

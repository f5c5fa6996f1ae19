"""Fault rules changeable at run time through the control API (contract: sandbox/README.md).

A rule (JSON)::

    {"provider": "apns", "status": 503, "reason": "ServiceUnavailable", "code": null,
     "message": null, "rate": 1.0, "count": 3, "retry_after": 2, "latency_ms": 0,
     "after_accept": false, "to": null, "callback_status": null, "error_code": null}

- ``status``: HTTP status to answer (SMTP: the reply code); null with ``latency_ms`` = slow only.
- ``reason`` / ``code``: the provider's own error code rendered in its real error body (APNs
  ``reason``, FCM ``errorCode``, Twilio numeric ``code``, SES error type, Web Push text).
- ``rate``: probability (0..1) that a matching request is hit; ``count``: the rule expires after
  hitting that many requests (null = until deleted); ``to``: only that token / number / address.
- ``retry_after``: seconds, sent as ``Retry-After``; ``latency_ms``: delay before answering
  (``asyncio.sleep``: other requests proceed meanwhile).
- ``after_accept``: the message is accepted and delivered, yet the answer is the error.
- Twilio only: ``callback_status`` (``undelivered`` / ``failed``) with ``error_code`` (e.g. 30003):
  the send is accepted (201) but the status callbacks end in that status.

Every matching rule that fires adds its latency (the largest wins); the first firing rule with a
``status`` decides the error, later status rules are not consumed.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from .records import PROVIDERS


class FaultError(ValueError):
    """A fault rule could not be parsed; the message says which field is wrong."""


@dataclass
class Fault:
    """One fault rule; see the module docstring for field meanings."""

    provider: str
    status: int | None = None
    reason: str | None = None
    code: int | None = None
    message: str | None = None
    rate: float = 1.0
    count: int | None = None
    retry_after: int | float | None = None
    latency_ms: int = 0
    after_accept: bool = False
    to: str | None = None
    callback_status: str | None = None
    error_code: int | None = None
    id: int = 0
    hits: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as returned by ``GET /faults``."""
        return asdict(self)


@dataclass
class Applied:
    """The outcome of :meth:`FaultStore.take` for one request.

    Attributes:
        latency_ms: delay to apply before answering (0 = none).
        error: the rule whose ``status`` decides the answer, or None.
        callback: the Twilio rule with ``callback_status``, or None.
    """

    latency_ms: int = 0
    error: Fault | None = None
    callback: Fault | None = None
    ids: list[int] = field(default_factory=list)


_FIELDS = {
    "provider", "status", "reason", "code", "message", "rate", "count", "retry_after",
    "latency_ms", "after_accept", "to", "callback_status", "error_code",
}


def parse_fault(data: dict[str, Any]) -> Fault:
    """Validate a rule posted to ``POST /faults``. Raises :class:`FaultError`."""
    if not isinstance(data, dict):
        raise FaultError("a fault rule is a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        raise FaultError(f"unknown fields: {sorted(unknown)}")
    provider = data.get("provider")
    if provider not in PROVIDERS:
        raise FaultError(f"provider must be one of {list(PROVIDERS)}")
    f = Fault(provider=provider)
    try:
        if data.get("status") is not None:
            f.status = int(data["status"])
            if not 100 <= f.status <= 599:
                raise FaultError("status must be 100..599")
        f.reason = None if data.get("reason") is None else str(data["reason"])
        f.code = None if data.get("code") is None else int(data["code"])
        f.message = None if data.get("message") is None else str(data["message"])
        f.rate = 1.0 if data.get("rate") is None else float(data["rate"])
        f.count = None if data.get("count") is None else int(data["count"])
        f.retry_after = data.get("retry_after")
        if f.retry_after is not None:
            f.retry_after = float(f.retry_after)
            if f.retry_after == int(f.retry_after):
                f.retry_after = int(f.retry_after)
        f.latency_ms = int(data.get("latency_ms") or 0)
        f.after_accept = bool(data.get("after_accept") or False)
        f.to = None if data.get("to") is None else str(data["to"])
        f.callback_status = data.get("callback_status")
        f.error_code = None if data.get("error_code") is None else int(data["error_code"])
    except (TypeError, ValueError) as exc:
        if isinstance(exc, FaultError):
            raise
        raise FaultError(str(exc)) from None
    if not 0.0 <= f.rate <= 1.0:
        raise FaultError("rate must be within 0..1")
    if f.count is not None and f.count < 1:
        raise FaultError("count must be >= 1 or null")
    if f.latency_ms < 0:
        raise FaultError("latency_ms must be >= 0")
    if f.callback_status is not None:
        if provider != "twilio" or f.callback_status not in ("undelivered", "failed"):
            raise FaultError("callback_status is Twilio only: 'undelivered' or 'failed'")
    if f.status is None and not f.latency_ms and f.callback_status is None:
        raise FaultError("a rule needs status, latency_ms or callback_status")
    if f.after_accept and f.status is None:
        raise FaultError("after_accept needs a status")
    return f


class FaultStore:
    """The active rules, in the order added. Thread-safe."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[Fault] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def add(self, rule: Fault) -> Fault:
        """Activate ``rule``; assigns and returns it with its ``id``."""
        with self._lock:
            rule.id = next(self._ids)
            self._rules.append(rule)
        return rule

    def list(self) -> list[dict[str, Any]]:
        """Active rules as JSON dicts."""
        with self._lock:
            return [r.to_dict() for r in self._rules]

    def delete(self, rule_id: int | None = None) -> int:
        """Remove one rule (by id) or all (None); return how many were removed."""
        with self._lock:
            before = len(self._rules)
            if rule_id is None:
                self._rules.clear()
            else:
                self._rules = [r for r in self._rules if r.id != rule_id]
            return before - len(self._rules)

    def take(self, provider: str, to: str | list[str] | None) -> Applied | None:
        """Fire the rules matching one request and consume their ``count``.

        Args:
            provider: the provider name.
            to: the request's address, or a list (e.g. every email recipient): a rule with
                ``to`` matches when it is one of them.

        Returns:
            :class:`Applied`, or None when no rule fired (the fast path).
        """
        if not self._rules:
            return None
        targets = to if isinstance(to, list) else [to]
        applied: Applied | None = None
        with self._lock:
            for rule in list(self._rules):
                if rule.provider != provider:
                    continue
                if rule.to is not None and rule.to not in targets:
                    continue
                is_error = rule.status is not None
                if is_error and applied is not None and applied.error is not None:
                    continue
                if rule.callback_status and applied is not None and applied.callback is not None:
                    continue
                if rule.rate < 1.0 and self._random.random() >= rule.rate:
                    continue
                if applied is None:
                    applied = Applied()
                applied.latency_ms = max(applied.latency_ms, rule.latency_ms)
                applied.ids.append(rule.id)
                if is_error:
                    applied.error = rule
                if rule.callback_status:
                    applied.callback = rule
                rule.hits += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
        return applied

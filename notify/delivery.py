"""The worker's send: claim the delivery, call its channel, record the outcome.

Exactly-once toward the user is built from three parts:

1. *Claim*: a conditional UPDATE moves the delivery ``queued → sending`` and takes a lease; a
   duplicate task (redelivered message, re-published row) finds nothing to claim and stops.
2. *Lease*: a worker that dies mid-send leaves the lease to run out; the dispatcher then hands the
   delivery back flagged ``unknown_outcome`` and the channel's policy decides (resend where the
   provider collapses resends, otherwise fail visibly).
3. *Outcome*: written in one statement with its log row; a database outage at that moment is
   waited out (the provider already answered, so the answer must not be lost).

The database is committed before the provider is called, and the task itself only passes ids.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit
import random
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError

from channels.base import Message, Outcome, Result
from channels.registry import get_channel

from . import breaker
from .cache import forget_recipient
from .channel_config import config_for
from .content import CHANNEL_GROUP
from .dbretry import through_outage
from .deadletters import publish_dead_letter
from .models import Device, Preference, Recipient
from .publishing import hand_back
from .sql import prepared_cursor
from .unsubscribe import unsubscribe_url

log = logging.getLogger(__name__)

_CLAIM_SQL = """
WITH claimed AS (
    UPDATE notify_delivery d
    SET status = 'sending', attempts = d.attempts + 1, updated_at = clock_timestamp(),
        -- clock_timestamp(): time spent waiting for the relay's row lock is not taken from the lease
        lease_until = clock_timestamp() + make_interval(secs => %s::float8)
    FROM notify_notification n
    WHERE d.id = %s::uuid AND d.status = 'queued' AND n.id = d.notification_id
    RETURNING d.id, d.channel, d.address, d.attempts, d.unknown_outcome, d.device_id,
              (SELECT subscription FROM notify_device WHERE id = d.device_id) AS subscription,
              (SELECT active FROM notify_device WHERE id = d.device_id) AS device_active,
              n.content, n.priority, n.expires_at, n.created_at, n.recipient_id,
              extract(epoch FROM n.expires_at - now()) AS ttl_left,
              extract(epoch FROM now() - n.created_at) AS age
), logged AS (
    INSERT INTO notify_deliverylog (delivery_id, at, from_status, to_status, attempt, reason)
    SELECT id, now(), 'queued', 'sending', attempts, '' FROM claimed
)
SELECT * FROM claimed
"""

_RECORD_SQL = """
WITH updated AS (
    UPDATE notify_delivery SET status = %(status)s::varchar, reason = %(reason)s::varchar, updated_at = now(),
        attempts = attempts - %(refund)s::int,
        provider_message_id = COALESCE(%(message_id)s::varchar, provider_message_id),
        last_error = %(error)s::text, lease_until = NULL, unknown_outcome = false,
        next_attempt_at = now() + make_interval(secs => %(delay)s::float8),
        sent_at = CASE WHEN %(status)s::varchar = 'sent' THEN now() ELSE sent_at END
    WHERE id = %(id)s::uuid AND attempts = %(attempt)s::int AND status IN ('sending', 'queued')
    RETURNING id
)
INSERT INTO notify_deliverylog (delivery_id, at, from_status, to_status, attempt, reason,
                                provider_status, provider_answer, duration_ms)
SELECT id, now(), 'sending', %(status)s::varchar, %(attempt)s::int, %(reason)s::varchar, %(provider_status)s::int,
       %(answer)s::jsonb, %(duration)s::float8 FROM updated
RETURNING delivery_id
"""



@dataclass(frozen=True)
class Claim:
    """A delivery this worker now holds, with what the send needs (one row of _CLAIM_SQL)."""

    id: Any
    channel: str
    address: str
    attempt: int
    unknown_outcome: bool
    device_id: int | None
    subscription: dict | None
    device_active: bool | None
    content: dict
    priority: str
    expires_at: Any
    created_at: Any
    recipient_id: int
    ttl_left: float
    age: float


#: Seconds a worker waits out a database outage before claiming (then the task is rejected back
#: to its queue) and before recording an outcome.
CLAIM_PATIENCE = 60
RECORD_PATIENCE = 120


def _claim_row(delivery_id: str) -> tuple[list[str], tuple] | None:
    with prepared_cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [settings.NOTIFY_SEND_LEASE, delivery_id])
        row = cursor.fetchone()
        return None if row is None else ([c.name for c in cursor.description], row)


def claim(delivery_id: str) -> Claim | None:
    """Take the delivery ``queued → sending`` with a lease; None if it is not ours to send.

    A database outage is waited out (``CLAIM_PATIENCE``): failing here would end the task and
    acknowledge its message while the row stays ``queued`` and already published, which the
    dispatcher only publishes again after ``NOTIFY_REPUBLISH_STALE_AFTER`` (15 minutes). The
    claim is one autocommit statement, so a retry either finds the row still ``queued`` or, if
    the lost answer was a commit, finds it ``sending`` and leaves it to the lease.
    """
    found = through_outage(f"claiming delivery {delivery_id}", CLAIM_PATIENCE,
                            lambda: _claim_row(delivery_id))
    if found is None:
        return None
    names, row = found
    values = dict(zip(names, row))
    values["attempt"] = values.pop("attempts")
    for key in ("content", "subscription"):
        if isinstance(values[key], str):
            values[key] = json.loads(values[key])
    values["ttl_left"] = float(values["ttl_left"])
    values["age"] = float(values["age"])
    return Claim(**values)


def retry_delay(attempt: int, result: Result, policy: dict) -> float:
    """Seconds before the next attempt: the provider's ``Retry-After`` clamped to
    ``[1, retry_after_max]`` when given, else exponential back-off with full jitter
    (``uniform(0, min(backoff_max, backoff_base * 2**(attempt-1)))``, AWS Architecture Blog,
    "Exponential Backoff And Jitter")."""
    if result.retry_after is not None:
        return min(max(float(result.retry_after), 1.0), policy["retry_after_max"])
    ceiling = min(policy["backoff_max"], policy["backoff_base"] * (2 ** (attempt - 1)))
    return random.uniform(0, ceiling)


def _message(c: Claim) -> Message:
    group = CHANNEL_GROUP[c.channel]
    options: dict[str, Any] = {}
    base = settings.NOTIFY_PUBLIC_URL.rstrip("/")
    if c.channel == "sms":
        options["status_callback"] = f"{base}/webhooks/twilio/status?delivery_id={c.id}"
    if c.channel == "email" and (url := unsubscribe_url(c.id)):
        options["list_unsubscribe"] = url
    return Message(
        delivery_id=str(c.id),
        to=c.subscription if c.channel == "webpush" and c.subscription else c.address,
        content=c.content.get(group, {}),
        priority=c.priority,
        ttl=max(int(c.ttl_left), 0),
        options=options,
    )


#: Longest provider answer kept in the delivery log, in characters of JSON.
ANSWER_LIMIT = 8000


def _answer_json(result: Result) -> str:
    """The provider's answer as JSON for the log; a longer one is kept as a cut string, still
    valid JSON (cutting the JSON text itself would make the jsonb cast, and the outcome, fail)."""
    text = json.dumps(dict(result.raw), default=str, ensure_ascii=False)
    if len(text) <= ANSWER_LIMIT:
        return text
    # Quoting the cut text as a JSON string at most doubles it (every '"' and '\\' escaped).
    return json.dumps({"truncated": text[:ANSWER_LIMIT // 2 - 20]}, ensure_ascii=False)


def _record(c: Claim, status: str, result: Result | None, reason: str, delay: float = 0.0,
            duration: float | None = None, error: str = "", refund: bool = False) -> None:
    """Write the outcome of attempt ``c.attempt`` and its log row in one statement.

    ``refund`` gives the attempt back (the provider was not called), so waiting out an open
    circuit does not spend the delivery's retry budget."""
    params = {
        "refund": 1 if refund else 0,
        "id": c.id, "attempt": c.attempt, "status": status, "reason": reason[:128], "delay": delay,
        "message_id": result.provider_message_id if result else None, "error": error[:2000],
        "provider_status": result.status if result and result.status else None,
        "answer": _answer_json(result) if result else None,
        "duration": duration,
    }

    def write() -> None:
        with prepared_cursor() as cursor:
            cursor.execute(_RECORD_SQL, params)
            if cursor.fetchone() is None:
                log.warning("delivery %s changed hands before its outcome %s was recorded", c.id, status)

    # The provider has answered: losing that answer would cause a resend. Wait the database out
    # (restart, failover) instead of giving up.
    through_outage(f"recording delivery {c.id}", RECORD_PATIENCE, write)


def _maybe_delivered(result: Result) -> bool:
    """True when the provider may have delivered although the answer is a retry. The adapters
    set ``raw["maybe_delivered"]`` on every RETRY: no answer after the request left, or an
    ambiguous 5xx (``channels.http.AMBIGUOUS_STATUSES``)."""
    return bool(result.raw.get("maybe_delivered"))


def breaker_scope(c: Claim) -> str:
    """What one circuit breaker covers: the provider for APNs, FCM, SMS and email; for Web Push
    each push service (endpoint origin) on its own, since browsers use many and one that is down
    must not hold back the others."""
    if c.channel == "webpush":
        url = urlsplit(c.address)
        return f"webpush:{url.scheme}://{url.netloc}"
    return c.channel


def _after_failure(c: Claim, result: Result) -> None:
    from channels.twilio_sms import is_opt_out

    if result.outcome == Outcome.DEAD_TOKEN and c.device_id:
        Device.objects.filter(id=c.device_id).update(active=False, deactivated_reason=(result.reason or "dead_token")[:64])
        _forget(c.recipient_id)
    elif c.channel == "sms" and is_opt_out(result):
        Preference.objects.update_or_create(recipient_id=c.recipient_id, channel="sms", category="",
                                            defaults={"enabled": False, "source": "sms_stop"})


def _forget(recipient_id: int) -> None:
    row = Recipient.objects.filter(id=recipient_id).values("app_id", "external_id").first()
    if row:
        forget_recipient(row["app_id"], row["external_id"])


def send_batch(delivery_ids: list[str]) -> dict[str, int]:
    """Send the deliveries of one task one after the other; returns how many ended in each
    status (``handed_back``: left for another task).

    After ``NOTIFY_TASK_BUDGET`` seconds the rest goes back to the outbox, so a slow provider
    cannot push a batch past the task's time limit. An unexpected error (Redis down, a bug)
    hands back the deliveries after the failing one and propagates: the task ends and its
    message is acknowledged, and they must not wait for the stale-publish sweep. A database
    outage propagates alone (the caller requeues the whole message; what was recorded is
    skipped when it comes back, its claim finding nothing).
    """
    started = time.monotonic()
    outcomes: dict[str, int] = {}
    for index, delivery_id in enumerate(delivery_ids):
        if index and time.monotonic() - started > settings.NOTIFY_TASK_BUDGET:
            hand_back(delivery_ids[index:])
            outcomes["handed_back"] = len(delivery_ids) - index
            break
        try:
            status = send(delivery_id)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            if delivery_ids[index + 1:]:
                hand_back(delivery_ids[index + 1:])
            raise
        outcomes[status] = outcomes.get(status, 0) + 1
    return outcomes


def send(delivery_id: str) -> str:
    """Send one delivery if it is still due. Returns the status it ended in, or ``skipped``.

    Never raises for provider trouble (that becomes ``retrying`` / ``failed`` /
    ``dead_lettered``); raises only if the database stays unreachable for two minutes.
    """
    c = claim(delivery_id)
    if c is None:
        return "skipped"
    policy = settings.NOTIFY_RETRY_POLICY[c.channel]
    if c.ttl_left <= 0:
        _record(c, "expired", None, "ttl_elapsed")
        return "expired"
    if c.device_active is False:
        _record(c, "failed", None, "device_inactive")
        return "failed"
    if c.attempt > policy["max_attempts"]:
        _record(c, "dead_lettered", None, "max_attempts")
        publish_dead_letter(c.channel, str(c.id), "max_attempts")
        return "dead_lettered"
    if c.unknown_outcome and policy["on_unknown_outcome"] == "fail":
        _record(c, "failed", None, "outcome_unknown")
        return "failed"

    scope = breaker_scope(c)
    if not breaker.may_call(scope):
        # The provider is failing for everyone: wait with the others instead of adding a call.
        # The dispatcher holds the channel's retries until a probe succeeds.
        delay = breaker.cooldown() * random.uniform(1, 2)
        _record(c, "retrying", None, "circuit_open", delay=delay, refund=True)
        return "retrying"

    channel = get_channel(c.channel, config_for)
    started = time.monotonic()
    result = channel.deliver(_message(c))
    duration = (time.monotonic() - started) * 1000

    if result.outcome == Outcome.SENT:
        _record(c, "sent", result, "", duration=duration)
        breaker.record_success(scope)
        return "sent"
    if result.outcome == Outcome.RETRY and policy["on_unknown_outcome"] == "fail" and _maybe_delivered(result):
        # The request reached the provider and no answer came back: it may have been delivered.
        # Resending could show the message twice on a channel that does not collapse resends,
        # so this is the same unknown outcome as a worker dying mid-send: fail visibly.
        breaker.record_failure(scope)
        _record(c, "failed", result, f"outcome_unknown:{result.reason}", duration=duration)
        return "failed"
    if result.outcome == Outcome.RETRY:
        breaker.record_failure(scope)
        delay = retry_delay(c.attempt, result, policy)
        if c.attempt >= policy["max_attempts"] or c.age + delay > policy["max_age"]:
            reason = f"retries_exhausted:{result.reason or result.status}"
            _record(c, "dead_lettered", result, reason, duration=duration)
            publish_dead_letter(c.channel, str(c.id), reason)
            return "dead_lettered"
        _record(c, "retrying", result, result.reason or str(result.status), delay=delay, duration=duration)
        return "retrying"
    # Side effects first: whoever sees the delivery failed also sees the device deactivated or
    # the opt-out recorded (both are idempotent if the outcome write must be repeated).
    _after_failure(c, result)
    _record(c, "failed", result, result.reason or str(result.status), duration=duration)
    return "failed"

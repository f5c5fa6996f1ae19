"""Send: the worker's side. Claim the delivery, choose its provider, call the adapter, record the
outcome and react to it.

Exactly-once toward the user is built from three parts:

1. *Claim*: a conditional UPDATE moves the delivery ``queued → sending`` and takes a lease; a
   duplicate task (redelivered message, re-published row) finds nothing to claim and stops.
2. *Lease*: a worker that dies mid-send leaves the lease to run out; the dispatcher then hands the
   delivery back flagged ``unknown_outcome`` and the channel's policy decides (resend where the
   device collapses resends, otherwise fail visibly).
3. *Outcome*: written in one statement with its log row; a database outage at that moment is
   waited out (the provider already answered, so the answer must not be lost).

A task's deliveries go in waves (:func:`send_batch`): one claim statement per wave, the sends of
the wave concurrent on this process's thread pool within each provider's limit (the adapter's
``send_concurrency``, ``NOTIFY_SEND_CONCURRENCY``), one outcome statement per wave. Deciding
(policy, rate limits, breaker, building the message) and reacting stay on the task's thread, so
Django's database connection and the Redis counters are used as before; the pool threads only
call ``adapter.deliver``.

The database is committed before the provider is called, and the task itself only passes ids.
The service reacts to the adapter's :class:`~channels.base.Outcome`, never to a provider: a
dead token deactivates the device, a recipient's refusal opts the recipient out of the channel.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from channels import registry
from channels.base import Channel, Message, Outcome, Result
from channels.errors import ChannelConfigurationError

from . import breaker, metrics, providers, ratelimit, store, tracking
from .dbretry import through_outage
from .deadletters import publish_dead_letter
from .models import FINAL_STATUSES, OUTCOME_UNKNOWN, DeliveryStatus, cannot_deliver
from .policy import DEFER, SUPPRESS, at_send, rules
from .preferences import label as preference_label
from .preferences import link as preference_link
from .sealing import SealError
from .unsubscribe import unsubscribe_url
from .webhooks.urls import webhook_url

log = logging.getLogger(__name__)

#: Seconds a worker waits out a database outage before claiming (then the task is rejected back
#: to its queue) and before recording an outcome.
CLAIM_PATIENCE = 60
RECORD_PATIENCE = 120
#: The outcome of a send whose app's own provider settings build no adapter: retried like a
#: transient failure (an operator can restore a key), without calling the provider.
UNUSABLE_SETTINGS = Result(Outcome.RETRY, reason="app_credentials_unusable")


@dataclass(frozen=True)
class Claim:
    """A delivery this worker now holds, with what the send needs (see notify.store.claim)."""

    id: Any
    channel: str
    address: str
    attempt: int
    unknown_outcome: bool
    device_id: int | None
    subscription: dict | None
    device_active: bool | None
    step: int
    delivery_created_at: Any  # the delivery row's created_at (its day partition)
    prior_reason: str  # why its previous attempt ended (``circuit_open``: handed back unsent)
    channel_deliveries: int  # deliveries of the notification on this channel (one per device)
    notification_id: Any
    app_id: int
    content: dict
    priority: str
    category: str
    fallback: list
    expires_at: Any
    created_at: Any
    recipient_id: int
    preference: bool | None
    address_suppressed: str | None  # the reason of the app's suppression of this address
    category_rules: dict | None
    muted: bool
    muted_until: Any
    timezone: str
    quiet_hours: str
    locale: str  # BCP 47: the template's locale used at accept, else the recipient's
    app_quiet_hours: str
    track_opens: bool
    track_clicks: bool
    credential_versions: dict | None  # provider → version of the app's own settings of it
    ttl_left: float
    age: float

    @property
    def to(self) -> Any:
        """What the adapter sends to: the device's subscription object where it has one (Web
        Push), else the stored address."""
        return self.subscription or self.address


def claim(delivery_id: str) -> Claim | None:
    """Take the delivery ``queued → sending`` with a lease; None if it is not ours to send.

    A database outage is waited out (``CLAIM_PATIENCE``): failing here would end the task and
    acknowledge its message while the row stays ``queued`` and already published, which the
    dispatcher only publishes again after ``NOTIFY_REPUBLISH_STALE_AFTER`` (15 minutes). The
    claim is one autocommit statement, so a retry either finds the row still ``queued`` or, if
    the lost answer was a commit, finds it ``sending`` and leaves it to the lease.
    """
    values = through_outage(f"claiming delivery {delivery_id}", CLAIM_PATIENCE,
                            lambda: store.claim(delivery_id))
    if values is None:
        return None
    values["attempt"] = values.pop("attempts")
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


def message_for(c: Claim, provider: str) -> Message:
    """The provider-neutral message of a claimed delivery, with the extras its adapter uses: an
    HTML part with the open pixel and click redirects when the app and category track
    (notify.tracking; CPU only, signed per delivery), a push open URL where the adapter carries
    one."""
    cls = registry.provider_class(provider)
    # A required category (a sign-in code) offers no way out: neither unsubscribe nor the page.
    leavable = cls.one_click_unsubscribe and not rules(c.category_rules, c.category).required
    content = c.content.get(cls.content_group, {})
    if content.get("html"):
        opens, clicks = tracking.switches(c.track_opens, c.track_clicks, c.category_rules)
        if opens or clicks:
            # Before the adapter adds its footer: the preference link stays a direct link.
            content = {**content, "html": tracking.email_html(content["html"], c.id, opens=opens, clicks=clicks)}
    return Message(
        delivery_id=str(c.id),
        to=c.to,
        content=content,
        priority=c.priority,
        ttl=max(int(c.ttl_left), 0),
        # The app's own account signs its callbacks: the URL names the app whose settings verify them.
        status_callback=webhook_url(provider, "status", c.app_id if provider in (c.credential_versions or {}) else None)
        if cls.status_callbacks else None,
        unsubscribe_url=unsubscribe_url(c.id) if leavable else None,
        preferences_url=preference_link(c.app_id, c.recipient_id)[0] if leavable else None,
        preferences_label=preference_label(c.locale) if leavable else None,
        open_url=tracking.push_open_url(c.id) if cls.open_reports else None,
    )


def _adapter(c: Claim, provider: str) -> Channel | None:
    """The adapter sending ``c`` through ``provider``: the app's own when it has settings of its
    own for the provider (notify.providers.adapter; the claim says which version), else the
    shared one. None when the app's settings build none (logged without their values)."""
    try:
        return providers.adapter(provider, c.app_id, (c.credential_versions or {}).get(provider))
    except (ChannelConfigurationError, SealError) as exc:
        log.error("app %s: its own %s settings build no adapter: %s", c.app_id, provider, exc)
        return None


def _record(c: Claim, status: str, reason: str, result: Result | None = None, provider: str | None = None,
            delay: float = 0.0, duration: float | None = None, refund: bool = False) -> None:
    """Write the outcome of attempt ``c.attempt``; a database outage is waited out (the provider
    has answered: losing that answer would cause a resend).

    A final outcome of a notification with a fallback advances it (notify.store.advance_fallback)
    in the same transaction: a worker dying in between cannot leave the later steps on standby.
    """
    advance = bool(c.fallback) and status in FINAL_STATUSES

    def write() -> None:
        # Without a fallback the outcome stays one autocommit statement (no BEGIN/COMMIT).
        with transaction.atomic() if advance else nullcontext():
            if not store.record_outcome(
                    c.id, c.attempt, status, reason, provider=provider,
                    provider_message_id=result.provider_message_id if result else None,
                    provider_status=result.status if result else None,
                    answer=result.raw if result else None, delay=delay, duration_ms=duration, refund=refund):
                log.warning("delivery %s changed hands before its outcome %s was recorded", c.id, status)
            if advance:
                # Even when the delivery changed hands: a retried write whose first try committed
                # finds that too, and the advance checks the rows themselves (idempotent).
                store.advance_fallback(c.notification_id, c.step,
                                       store.FALLBACK_DONE if status == DeliveryStatus.SENT
                                       else store.FALLBACK_NEXT if cannot_deliver(status, reason)
                                       else store.FALLBACK_STOP)

    through_outage(f"recording delivery {c.id}", RECORD_PATIENCE, write)
    metrics.record_delivery(c, status, reason, provider, duration, result)


def _react(c: Claim, result: Result) -> None:
    """Side effects of a permanent answer about the address (idempotent, so a repeated outcome
    write after a database outage is harmless)."""
    if result.outcome is Outcome.DEAD_TOKEN and c.device_id:
        store.deactivate_device(c.device_id, result.reason or "dead_token")
    elif result.outcome is Outcome.RECIPIENT_REFUSED:
        store.set_preferences([c.recipient_id], [c.channel], "", False, "provider")


@dataclass
class _Done:
    """A decided outcome of one claim, waiting to be written (see :func:`_write`)."""

    c: Claim
    status: str
    reason: str
    result: Result | None = None
    provider: str | None = None
    delay: float = 0.0
    duration: float | None = None
    refund: bool = False
    dead_letter: bool = False  # publish a dead letter once written


@dataclass
class _Call:
    """A claim whose provider is to be called: what the call and its conclusion need."""

    c: Claim
    policy: dict
    provider: str
    scope: str
    adapter: Channel | None
    message: Message | None


#: Released unsent (the batch stopped on an unexpected error): retried at once, attempt refunded.
RELEASED = "released_unsent"

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def _forget_pool() -> None:
    # A forked child (Celery's prefork pool) must not use its parent's threads.
    global _pool
    _pool = None
    _slots.clear()


os.register_at_fork(after_in_child=_forget_pool)


def _executor() -> ThreadPoolExecutor:
    """This process's send pool, created on first use and reused: as many threads as the
    largest per-provider limit (``NOTIFY_SEND_CONCURRENCY``)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            size = max(settings.NOTIFY_SEND_CONCURRENCY.values(), default=1)
            _pool = ThreadPoolExecutor(max_workers=max(size, 1), thread_name_prefix="notify-send")
        return _pool


def _slot(provider: str) -> threading.BoundedSemaphore:
    """The semaphore bounding ``provider``'s sends in flight in this process."""
    limit = max(int(settings.NOTIFY_SEND_CONCURRENCY.get(provider, 1)), 1)
    with _pool_lock:
        return _slots.setdefault((provider, limit), threading.BoundedSemaphore(limit))


def wave_size(channel: str | None, batch: int) -> int:
    """How many deliveries of a ``channel`` batch of ``batch`` are claimed, sent and recorded
    together: the largest limit among the channel's providers (all of ``batch`` when the
    channel is not known). ``NOTIFY_TASK_BUDGET`` is checked between waves, as it was between
    sends when they went one by one: a wave takes about one provider round trip."""
    if channel is None or channel not in settings.NOTIFY_CHANNEL_PROVIDERS:
        return max(batch, 1)
    return max(max(settings.NOTIFY_SEND_CONCURRENCY.get(p, 1) for p in settings.NOTIFY_CHANNEL_PROVIDERS[channel]), 1)


def send_batch(delivery_ids: list[str], channel: str | None = None) -> dict[str, int]:
    """Send the deliveries of one task of ``channel``; returns how many ended in each status
    (``handed_back``: left for another task).

    The batch goes in waves of :func:`wave_size`: each wave is claimed in one statement, its
    sends run concurrently (at most ``NOTIFY_SEND_CONCURRENCY[provider]`` in flight per
    provider in this process, on one thread pool calling the adapters' synchronous
    ``deliver``), and its outcomes are written in one statement with their log rows (an
    outcome that advances a fallback keeps its own transaction). The provider of each delivery
    is chosen before the wave's calls, so a breaker opened by a wave's failures turns away the
    next wave, not the rest of its own (at most one wave more than one-by-one sending).

    After ``NOTIFY_TASK_BUDGET`` seconds the waves not started go back to the outbox unclaimed,
    so a slow provider cannot push a batch past the task's time limit. An unexpected error (Redis
    down, a bug) in one delivery does not lose the others of its wave (see :func:`_send_wave`);
    what is still queued (the waves after it, or its whole wave when the claim itself failed) is
    handed back and the error propagates: the task ends and its message
    is acknowledged, and they must not wait for the stale-publish sweep. A database outage
    propagates alone (the caller requeues the whole message; what was recorded is skipped when
    it comes back, its claim finding nothing).
    """
    started = time.monotonic()
    outcomes: dict[str, int] = {}
    size = wave_size(channel, len(delivery_ids))
    for index in range(0, len(delivery_ids), size):
        if index and time.monotonic() - started > settings.NOTIFY_TASK_BUDGET:
            store.hand_back(delivery_ids[index:])
            outcomes["handed_back"] = len(delivery_ids) - index
            break
        try:
            statuses = _send_wave(delivery_ids[index:index + size])
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            # The wave's own ids too: hand_back only touches rows still queued (a failed claim
            # took none of them); claimed ones were recorded, released or left to their lease.
            rest = _well_formed(delivery_ids[index:])
            if rest:
                store.hand_back(rest)
            raise
        for status in statuses.values():
            outcomes[status] = outcomes.get(status, 0) + 1
    return outcomes


def _well_formed(delivery_ids: list[str]) -> list[str]:
    """The ids that are UUIDs: a malformed one (the error being handled may be its failed
    claim) would fail the hand-back's statement too."""
    kept = []
    for delivery_id in delivery_ids:
        try:
            uuid.UUID(str(delivery_id))
        except ValueError:
            continue
        kept.append(delivery_id)
    return kept


def send(delivery_id: str) -> str:
    """Send one delivery if it is still due. Returns the status it ended in, or ``skipped``.

    Never raises for provider trouble (that becomes ``retrying`` / ``failed`` /
    ``dead_lettered``); raises only if the database stays unreachable for two minutes.
    """
    return _send_wave([delivery_id]).get(str(delivery_id), "skipped")


def claim_batch(delivery_ids: list[str]) -> list[Claim]:
    """:func:`claim` for every id at once (notify.store.claim_batch, one statement), the
    database outage waited out the same way; the claims in the order of ``delivery_ids``."""
    rows = through_outage(f"claiming {len(delivery_ids)} deliveries", CLAIM_PATIENCE,
                          lambda: store.claim_batch(delivery_ids))
    claims = []
    for values in rows:
        values["attempt"] = values.pop("attempts")
        values["ttl_left"] = float(values["ttl_left"])
        values["age"] = float(values["age"])
        claims.append(Claim(**values))
    return claims


def _send_wave(delivery_ids: list[str]) -> dict[str, str]:
    """Claim, decide, send concurrently and record ``delivery_ids``; returns id → status of
    those claimed (``skipped`` ones are absent).

    An unexpected error while deciding stops the deciding: the claims not yet decided are
    released unsent (``retrying`` at once with their attempt refunded, :data:`RELEASED`), the
    failing one is left to its lease (as a worker dying there would), the rest is sent and
    recorded, then the first error is raised. An error in one send or its conclusion leaves
    that delivery to its lease and the others are recorded before it is raised.
    """
    claims = claim_batch(delivery_ids)
    done: list[_Done] = []
    calls: list[_Call] = []
    error: BaseException | None = None
    for index, c in enumerate(claims):
        try:
            step = _decide(c)
        except Exception as exc:
            error = exc
            log.exception("delivery %s: deciding its send failed; releasing %d unsent", c.id, len(claims) - index - 1)
            done.extend(_Done(rest, "retrying", RELEASED, refund=True) for rest in claims[index + 1:])
            break
        (done if isinstance(step, _Done) else calls).append(step)

    for call, answer in zip(calls, _call_all(calls)):
        if isinstance(answer, BaseException):
            error = error or answer
            log.error("delivery %s: its send raised; left to its lease", call.c.id, exc_info=answer)
            continue
        try:
            done.append(_conclude(call, *answer))
        except Exception as exc:
            error = error or exc
            log.exception("delivery %s: concluding its send failed; left to its lease", call.c.id)
    _write(done)
    if error is not None:
        raise error
    return {str(d.c.id): d.status for d in done if d.reason != RELEASED}


def _decide(c: Claim) -> _Done | _Call:
    """Everything before the provider call: the outcome when it is not to be called (expired,
    device gone, max attempts, unknown outcome, the recipient's decision, no provider), else
    the call to make."""
    policy = settings.NOTIFY_RETRY_POLICY[c.channel]
    if c.ttl_left <= 0:
        return _Done(c, "expired", "ttl_elapsed")
    if c.device_active is False:
        return _Done(c, "failed", "device_inactive")
    if c.device_id is None and registry.channel_class(c.channel).address_kind.is_device:
        return _Done(c, "suppressed", "device_removed")
    if c.attempt > policy["max_attempts"]:
        return _Done(c, "dead_lettered", "max_attempts", dead_letter=True)
    if c.unknown_outcome and policy["on_unknown_outcome"] == "fail":
        return _Done(c, "failed", OUTCOME_UNKNOWN)
    # What the recipient decided since the send was accepted holds now: an opt-out (API, admin,
    # preference page, STOP, unsubscribe), a mute, quiet hours, a rate limit.
    decision = at_send(c, timezone.now())
    if decision.action == SUPPRESS:
        return _Done(c, "suppressed", decision.reason)
    if decision.action == DEFER:
        # Not an attempt: the provider is not called, and the next claim is this attempt again.
        wait = max((decision.until - timezone.now()).total_seconds(), 0.0)
        return _Done(c, "scheduled", decision.reason, delay=wait, refund=True)

    provider = providers.choose(c.channel, c.to)
    if provider is None:
        # Every provider of the channel is failing for everyone: wait with the others instead
        # of adding a call. The dispatcher holds the channel's retries until a probe succeeds.
        if c.attempt == 1:
            # It was counted against the rate limit just now; its attempt is refunded, and the
            # next claim (attempt 1 again) must not count it twice.
            ratelimit.mark_counted(c, rules(c.category_rules, c.category))
        return _Done(c, "retrying", breaker.CIRCUIT_OPEN, delay=breaker.cooldown() * random.uniform(1, 2),
                     refund=True)
    adapter = _adapter(c, provider)
    # The message is built here, on the task's thread: it may read the database (Django's
    # connections are per thread) and the pool threads only call the provider.
    return _Call(c, policy, provider, registry.provider_class(provider).breaker_scope(c.to), adapter,
                 message_for(c, provider) if adapter is not None else None)


def _timed(call: _Call) -> tuple[Result, float]:
    """Call ``call``'s adapter within its provider's limit; the result and the call's
    milliseconds (waiting for a slot not included)."""
    if call.adapter is None:
        return UNUSABLE_SETTINGS, 0.0
    with _slot(call.provider):
        started = time.monotonic()
        result = call.adapter.deliver(call.message)
        return result, (time.monotonic() - started) * 1000


def _call_all(calls: list[_Call]) -> list[tuple[Result, float] | BaseException]:
    """The answers of ``calls`` in order, made concurrently on the send pool (one call runs
    on this thread); an exception a call raised takes its place."""
    if len(calls) <= 1:
        answers: list[tuple[Result, float] | BaseException] = []
        for call in calls:
            try:
                answers.append(_timed(call))
            except Exception as exc:
                answers.append(exc)
        return answers
    futures = [_executor().submit(_timed, call) for call in calls]
    return [f.exception() or f.result() for f in futures]


def _conclude(call: _Call, result: Result, duration: float) -> _Done:
    """The outcome of a provider's answer, with its breaker and address side effects."""
    c, policy, provider = call.c, call.policy, call.provider
    reason = result.reason or str(result.status)
    if result.outcome is Outcome.SENT:
        breaker.record_success(call.scope)
        return _Done(c, "sent", "", result, provider, duration=duration)
    if result.outcome is Outcome.RETRY:
        if call.adapter is not None:  # one app's unusable settings say nothing about the provider
            breaker.record_failure(call.scope)
        if policy["on_unknown_outcome"] == "fail" and result.maybe_delivered:
            # The request reached the provider and no answer came back: it may have been
            # delivered. Resending could show the message twice on a channel that does not
            # collapse resends, so this is the same unknown outcome as a worker dying mid-send.
            return _Done(c, "failed", f"{OUTCOME_UNKNOWN}:{result.reason}", result, provider, duration=duration)
        delay = retry_delay(c.attempt, result, policy)
        if c.attempt >= policy["max_attempts"] or c.age + delay > policy["max_age"]:
            return _Done(c, "dead_lettered", f"retries_exhausted:{reason}", result, provider,
                         duration=duration, dead_letter=True)
        return _Done(c, "retrying", reason, result, provider, delay=delay, duration=duration)
    # Side effects first: whoever sees the delivery failed also sees the device deactivated or
    # the opt-out recorded.
    _react(c, result)
    return _Done(c, "failed", reason, result, provider, duration=duration)


def _write(done: list[_Done]) -> None:
    """Write the outcomes of a wave: one statement for all (notify.store.record_outcomes), a
    database outage waited out; an outcome advancing a fallback in its own transaction
    (:func:`_record`). Then, per delivery, its metrics and, once written, its dead letter."""
    advancing = [d for d in done if d.c.fallback and d.status in FINAL_STATUSES]
    plain = [d for d in done if not (d.c.fallback and d.status in FINAL_STATUSES)]
    if plain:
        rows = [store.Outcome(
            d.c.id, d.c.attempt, d.status, d.reason, provider=d.provider,
            provider_message_id=d.result.provider_message_id if d.result else None,
            provider_status=d.result.status if d.result else None,
            answer=d.result.raw if d.result else None, delay=d.delay, duration_ms=d.duration,
            refund=d.refund, created_at=d.c.delivery_created_at) for d in plain]
        written = through_outage(f"recording {len(rows)} deliveries", RECORD_PATIENCE,
                                 lambda: store.record_outcomes(rows))
        for d in plain:
            if str(d.c.id) not in written:
                log.warning("delivery %s changed hands before its outcome %s was recorded", d.c.id, d.status)
            metrics.record_delivery(d.c, d.status, d.reason, d.provider, d.duration, d.result)
    for d in advancing:
        _record(d.c, d.status, d.reason, d.result, d.provider, d.delay, d.duration, d.refund)
    for d in done:
        if d.dead_letter:
            publish_dead_letter(d.c.channel, str(d.c.id), d.reason)

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

The database is committed before the provider is called, and the task itself only passes ids.
The service reacts to the adapter's :class:`~channels.base.Outcome`, never to a provider: a
dead token deactivates the device, a recipient's refusal opts the recipient out of the channel.
"""

from __future__ import annotations

import logging
import random
import time
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
            store.hand_back(delivery_ids[index:])
            outcomes["handed_back"] = len(delivery_ids) - index
            break
        try:
            status = send(delivery_id)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            if delivery_ids[index + 1:]:
                store.hand_back(delivery_ids[index + 1:])
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
        _record(c, "expired", "ttl_elapsed")
        return "expired"
    if c.device_active is False:
        _record(c, "failed", "device_inactive")
        return "failed"
    if c.device_id is None and registry.channel_class(c.channel).address_kind.is_device:
        _record(c, "suppressed", "device_removed")
        return "suppressed"
    if c.attempt > policy["max_attempts"]:
        _record(c, "dead_lettered", "max_attempts")
        publish_dead_letter(c.channel, str(c.id), "max_attempts")
        return "dead_lettered"
    if c.unknown_outcome and policy["on_unknown_outcome"] == "fail":
        _record(c, "failed", OUTCOME_UNKNOWN)
        return "failed"
    # What the recipient decided since the send was accepted holds now: an opt-out (API, admin,
    # preference page, STOP, unsubscribe), a mute, quiet hours, a rate limit.
    decision = at_send(c, timezone.now())
    if decision.action == SUPPRESS:
        _record(c, "suppressed", decision.reason)
        return "suppressed"
    if decision.action == DEFER:
        # Not an attempt: the provider is not called, and the next claim is this attempt again.
        wait = max((decision.until - timezone.now()).total_seconds(), 0.0)
        _record(c, "scheduled", decision.reason, delay=wait, refund=True)
        return "scheduled"

    provider = providers.choose(c.channel, c.to)
    if provider is None:
        # Every provider of the channel is failing for everyone: wait with the others instead
        # of adding a call. The dispatcher holds the channel's retries until a probe succeeds.
        if c.attempt == 1:
            # It was counted against the rate limit just now; its attempt is refunded, and the
            # next claim (attempt 1 again) must not count it twice.
            ratelimit.mark_counted(c, rules(c.category_rules, c.category))
        _record(c, "retrying", breaker.CIRCUIT_OPEN, delay=breaker.cooldown() * random.uniform(1, 2), refund=True)
        return "retrying"
    scope = registry.provider_class(provider).breaker_scope(c.to)

    adapter = _adapter(c, provider)
    started = time.monotonic()
    result = adapter.deliver(message_for(c, provider)) if adapter is not None else UNUSABLE_SETTINGS
    duration = (time.monotonic() - started) * 1000
    reason = result.reason or str(result.status)

    if result.outcome is Outcome.SENT:
        _record(c, "sent", "", result, provider, duration=duration)
        breaker.record_success(scope)
        return "sent"
    if result.outcome is Outcome.RETRY:
        if adapter is not None:  # one app's unusable settings say nothing about the provider
            breaker.record_failure(scope)
        if policy["on_unknown_outcome"] == "fail" and result.maybe_delivered:
            # The request reached the provider and no answer came back: it may have been
            # delivered. Resending could show the message twice on a channel that does not
            # collapse resends, so this is the same unknown outcome as a worker dying mid-send.
            _record(c, "failed", f"{OUTCOME_UNKNOWN}:{result.reason}", result, provider, duration=duration)
            return "failed"
        delay = retry_delay(c.attempt, result, policy)
        if c.attempt >= policy["max_attempts"] or c.age + delay > policy["max_age"]:
            reason = f"retries_exhausted:{reason}"
            _record(c, "dead_lettered", reason, result, provider, duration=duration)
            publish_dead_letter(c.channel, str(c.id), reason)
            return "dead_lettered"
        _record(c, "retrying", reason, result, provider, delay=delay, duration=duration)
        return "retrying"
    # Side effects first: whoever sees the delivery failed also sees the device deactivated or
    # the opt-out recorded.
    _react(c, result)
    _record(c, "failed", reason, result, provider, duration=duration)
    return "failed"

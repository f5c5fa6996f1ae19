"""What comes back after a send: the one place a delivery event enters the service.

Provider webhooks (Twilio status callbacks, SES events over SNS), tracking (open pixel, click
redirects) and the API's open reports all call :func:`record`. It writes the event once per
delivery and kind (notify.store.record_delivery_event: the status only moves up
:data:`notify.models.RECEIPT_RANK`), counts it in ``notify_delivery_events`` and logs one line;
with ``refused`` it also stops what was refused: a hard bounce or a complaint suppresses the
address for the app (notify.models.AddressSuppression, whoever holds it), Twilio's 21610 opts
the recipient out of the channel.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from . import metrics, store
from .logmask import mask_value
from .models import EventKind, SuppressionReason

log = logging.getLogger("notify.receipts")
#: Refusals that are about the address, not the person: they suppress it for the whole app.
SUPPRESSING = {EventKind.BOUNCED: SuppressionReason.HARD_BOUNCE, EventKind.COMPLAINED: SuppressionReason.COMPLAINT}


def record(delivery_id: Any, kind: str, occurred_at: datetime.datetime | None = None, *, source: str,
           provider_message_id: str | None = None, reason: str = "", data: Any = None,
           refused: bool = False) -> store.EventOutcome | None:
    """Record one delivery event and react to it.

    Args:
        delivery_id: the delivery the event is about.
        kind: an :class:`~notify.models.EventKind` value (ValueError otherwise).
        occurred_at: the provider's time of the event (aware); now when the provider gives none.
        source: who reported it, for the metric and the log: a provider name (``twilio``,
            ``ses``), ``tracking`` (the open pixel, click redirects, a push's open URL), ``api``
            or ``unsubscribe`` (the one-click unsubscribe).
        provider_message_id: when given, the event counts only for the delivery carrying it (or
            none yet: the event beat the worker's outcome).
        reason: the provider's error code or bounce type.
        data: the event as received (kept on the event row with personal data masked).
        refused: the address or the recipient refused the channel through this event. A hard
            bounce (``bounced``) or a complaint (``complained``) suppresses the delivery's
            address on its channel for the app, for every category and recipient; any other
            (Twilio's 21610) opts the recipient out of the channel, every category, with the
            preference's source ``provider`` as when a send is refused (notify.send).
    Returns:
        What notify.store.record_delivery_event returned: None for an unknown delivery.
    """
    if kind not in EventKind.values:
        raise ValueError(f"not a delivery event: {kind!r}")
    at = occurred_at or datetime.datetime.now(datetime.timezone.utc)
    outcome = store.record_delivery_event(delivery_id, kind, at, provider_message_id=provider_message_id,
                                          reason=reason, data=mask_value(data) if data is not None else None)
    if outcome is None:
        log.info("delivery event for no delivery of ours", extra={
            "delivery_id": str(delivery_id), "event": kind, "source": source})
        return None
    if outcome.recorded:
        metrics.record_event(outcome.channel, source, kind)
    if refused and kind in SUPPRESSING and outcome.address:
        store.suppress_address(outcome.app_id, outcome.channel, outcome.address, SUPPRESSING[kind], delivery_id)
    elif refused:
        store.set_preferences([outcome.recipient_id], [outcome.channel], "", False, "provider")
    log.info("delivery %s", kind, extra={
        "delivery_id": str(delivery_id), "channel": outcome.channel, "event": kind, "source": source,
        "reason": reason or None, "recorded": outcome.recorded, "status_moved": outcome.moved,
        "opted_out": refused or None})
    return outcome

"""Erasure of a recipient's personal data (the GDPR's right to erasure, article 17): the one rule,
used by the API (``POST /api/v1/recipients/<external_id>/erase``) and the admin's "Erase personal
data" action.

What goes, in one transaction: the recipient's name, email address, phone number, locale, time
zone and quiet hours; its devices (tokens, Web Push endpoints and keys) and preferences; from
its notifications and their deliveries, everything that names or reaches the person: each
delivery's address and device, the provider answers logged for them, the event data, the
template data and rendered content, the ``to`` of the stored 202 answer. What stays, so that
counts and analytics stay right: the notifications and deliveries themselves with their status,
reason, channel, provider, template, version, variant, step, attempts, provider message id and
times, the delivery log's transitions and the events' kinds; the idempotency key (the product's
own token for a request, which a retry still answers from) and the request hash.

Deliveries that have not started (``scheduled``, ``queued``, ``retrying``, ``standby``) are
cancelled by the cancel of ``DELETE /api/v1/notifications/<id>`` (notify.store.cancel), so none
is sent afterwards. One a worker is sending at that instant (``sending``) cannot be called back:
it is counted in ``sending``; its outcome is recorded as usual (erasing the row again from the
admin clears what that wrote).

The recipient's row is kept (notifications refer to it) as a tombstone: its ``external_id``
becomes :data:`TOMBSTONE_PREFIX` and its primary key, which no API request can name (an
external id with a control character is refused), so the product can create a new recipient
with the old id at once, starting empty; and it is muted, so that nothing reaching a worker
later (a send accepted concurrently with the erasure) goes out, required categories aside.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

from django.db import transaction
from django.utils import timezone

from . import cache, store
from .models import Notification, Recipient

log = logging.getLogger(__name__)

#: The erased row's ``external_id`` is this and its primary key: DEL, a control character, which
#: notify.validators.external_id refuses in every request, then ``erased:``.
TOMBSTONE_PREFIX = "\x7ferased:"


def tombstone(recipient_id: int) -> str:
    """The ``external_id`` an erased recipient's row keeps."""
    return f"{TOMBSTONE_PREFIX}{recipient_id}"


def is_erased(external_id: str) -> bool:
    """Whether ``external_id`` is an erased recipient's (:func:`tombstone`)."""
    return external_id.startswith(TOMBSTONE_PREFIX)


@dataclasses.dataclass(frozen=True)
class Erasure:
    """What :func:`erase_recipient` did.

    Attributes:
        recipient_id: the row erased (kept as a tombstone).
        external_id: the id the product knew it by (itself when the row was erased before).
        erased_at: when (aware).
        devices, preferences: rows deleted.
        notifications, deliveries: the recipient's rows kept, cleared of personal data.
        cancelled: ids of the deliveries that had not started, now ``cancelled``.
        sending: deliveries a worker was sending at that instant, left to finish.
    """

    recipient_id: int
    external_id: str
    erased_at: datetime.datetime
    devices: int
    preferences: int
    notifications: int
    deliveries: int
    cancelled: list
    sending: int


def erase(app_id: int, external_id: str) -> Erasure | None:
    """Erase the recipient ``external_id`` of app ``app_id`` (:func:`erase_recipient`); None
    when the app has no such recipient (another app's, an unknown one, one erased already)."""
    recipient_id = Recipient.objects.filter(app_id=app_id, external_id=external_id).values_list(
        "id", flat=True).first()
    return None if recipient_id is None else erase_recipient(recipient_id, external_id)


def erase_recipient(recipient_id: int, external_id: str | None = None) -> Erasure | None:
    """Erase a recipient's personal data, in one transaction (see the module docstring);
    None when there is no such row, or when ``external_id`` is given and the row no longer has
    it (a concurrent erasure committed first). Erasing a tombstone again clears what was
    written since (a delivery that was ``sending``) and answers with what it changed.

    The cached send profile is dropped now and after the commit (notify.cache), so the next
    send naming the old id finds no recipient.
    """
    with transaction.atomic():
        found = store.lock_recipient(recipient_id)
        if found is None or external_id is not None and found[1] != external_id:
            return None
        app_id, external_id = found
        # The erasure's statements before the cancel: they take the deliveries' locks before the
        # notifications', the order of a worker recording an outcome (notify.store._ERASE_SQL);
        # the cancel then finds both held by this transaction already.
        counts = store.erase_recipient_rows(recipient_id, tombstone(recipient_id),
                                            Recipient._meta.get_field("locale").default,
                                            Recipient._meta.get_field("timezone").default)
        pending = (Notification.objects.filter(recipient_id=recipient_id, deliveries__status__in=store.CANCELLABLE)
                   .values_list("id", flat=True).distinct().order_by("id"))
        cancelled = []
        for notification_id in list(pending):
            cancelled += store.cancel(app_id, notification_id) or []
        cache.forget_recipient(app_id, external_id)
        log.info("recipient %s of app %s erased: %s devices, %s deliveries cleared, %s cancelled",
                 recipient_id, app_id, counts["devices"], counts["deliveries"], len(cancelled))
        return Erasure(recipient_id=recipient_id, external_id=external_id, erased_at=timezone.now(),
                       devices=counts["devices"], preferences=counts["preferences"],
                       notifications=counts["notifications"], deliveries=counts["deliveries"],
                       cancelled=cancelled, sending=counts["sending"])

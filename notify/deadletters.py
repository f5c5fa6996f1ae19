"""Dead letters: deliveries that ran out of attempts (or kept killing their worker).

The delivery row says ``dead_lettered`` with the reason; a message with the delivery id also goes
to the channel's dead-letter queue (``<channel>.dead``) so operators see them in Flower or the
RabbitMQ console. Replay moves rows back to ``queued`` in the outbox; a row that is no longer
dead-lettered (already replayed, or sent) is left alone, so a replay never resends a sent message.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings

from . import store
from .models import Delivery, DeliveryStatus
from .queues import DEAD_LETTER_EXCHANGE, dead_letter_queue

log = logging.getLogger(__name__)


def publish_dead_letter(channel: str, delivery_id: str, reason: str) -> None:
    """Put ``{"delivery_id", "reason"}`` on ``<channel>.dead``; a broker failure is logged only
    (the row already records the dead letter)."""
    from .celery import app

    try:
        with app.producer_or_acquire() as producer:
            producer.publish({"delivery_id": delivery_id, "channel": channel, "reason": reason},
                             exchange=DEAD_LETTER_EXCHANGE, routing_key=channel, serializer="json",
                             delivery_mode="persistent",
                             declare=[q for q in app.conf.task_queues if q.name == dead_letter_queue(channel)],
                             retry=True, retry_policy={"max_retries": 2})
    except Exception:  # noqa: BLE001
        log.exception("could not publish dead letter of delivery %s", delivery_id)


def replay(delivery_ids: list[str] | None = None, channel: str | None = None) -> int:
    """Move dead-lettered deliveries back to ``queued`` with a fresh attempt budget; the outbox
    relay publishes them once this commits.

    Args:
        delivery_ids: only these; None for every dead-lettered delivery (of ``channel`` if given).
    Returns:
        How many were replayed.
    """
    return store.replay_dead_letters(delivery_ids, channel)


def queue_depths() -> dict[str, int]:
    """Messages waiting on each ``<channel>.dead`` queue."""
    from .celery import app

    depths = {}
    with app.connection_for_write() as conn:
        for channel in settings.NOTIFY_CHANNELS:
            depths[channel] = conn.default_channel.queue_declare(
                queue=dead_letter_queue(channel), passive=True).message_count
    return depths


def drain_queue_messages(channels: list[str], delivery_ids: list[str] | None = None) -> int:
    """Remove from the dead-letter queues the messages of deliveries that are no longer
    dead-lettered (replayed); messages of other deliveries go back to their queue."""
    from .celery import app

    removed = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in channels:
            held = []
            while True:
                # A raw py-amqp message: acknowledged and rejected through its channel.
                message = channel.basic_get(dead_letter_queue(name), no_ack=False)
                if message is None:
                    break
                try:
                    delivery_id = json.loads(message.body).get("delivery_id")
                except (ValueError, AttributeError):
                    delivery_id = None  # not one of ours: leave it for an operator
                wanted = delivery_id is not None and (delivery_ids is None or delivery_id in delivery_ids)
                if wanted and not Delivery.objects.filter(id=delivery_id, status=DeliveryStatus.DEAD_LETTERED).exists():
                    channel.basic_ack(message.delivery_tag)
                    removed += 1
                else:
                    held.append(message.delivery_tag)
            # Held until the queue is empty: rejected at once they would be fetched again.
            for tag in held:
                channel.basic_reject(tag, requeue=True)
    return removed

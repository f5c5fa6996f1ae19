"""Names on the broker, in one place: each channel's task and queue, the dead-letter queues and
the maintenance queue (celeryconfig routes by these; the outbox publishes by them)."""

#: The queue of the dispatcher's and the retention tasks.
MAINTENANCE_QUEUE = "maintenance"
#: The exchange the dead-letter queues are bound to.
DEAD_LETTER_EXCHANGE = "notify.dead"


def queue_name(channel: str) -> str:
    """The queue holding ``channel``'s tasks, consumed by that channel's worker pool
    (``celery worker -Q <queue_name>``)."""
    return channel


def task_name(channel: str) -> str:
    """The Celery task sending ``channel``'s deliveries; routed to the queue named ``channel``."""
    return f"notify.deliver.{channel}"


def dead_letter_queue(channel: str) -> str:
    """The queue holding ``channel``'s dead letters until an operator replays them."""
    return f"{channel}.dead"

"""Celery tasks. Thin on purpose: they carry ids and call the sending logic.

One task per channel, named ``notify.deliver.<channel>`` and routed by that name to the
channel's own queue (``celeryconfig.task_routes``), so each channel has its own worker pool. A
task carries up to ``NOTIFY_TASK_BATCH`` delivery ids of its channel (notify.publishing).
"""

from celery.exceptions import Reject
from celery.signals import task_prerun, worker_process_shutdown
from django.db import InterfaceError, OperationalError, close_old_connections

from channels.registry import CHANNELS, close_all

from . import delivery, publishing
from .celery import app

def _deliver_task(channel: str):
    @app.task(name=f"notify.deliver.{channel}", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def deliver(delivery_ids: list[str] | str) -> dict[str, int]:
        # A bare id is a message published by a version that sent one delivery per task.
        ids = [delivery_ids] if isinstance(delivery_ids, str) else delivery_ids
        try:
            return delivery.send_batch(ids)
        except (OperationalError, InterfaceError) as exc:
            # The database stayed away longer than the send waits: put the message back rather
            # than acknowledge deliveries nobody has claimed or recorded.
            raise Reject(exc, requeue=True) from exc

    deliver.__doc__ = (f"Send a batch of {channel} deliveries by id (see notify.delivery.send_batch); "
                       "returns how many ended in each status.")
    return deliver


deliver_tasks = {channel: _deliver_task(channel) for channel in CHANNELS}


@app.task(name="notify.maintenance.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Move retries whose delay is over and sends whose worker died back into the outbox, and
    publish what no relay took (notify.publishing.dispatch_due)."""
    return publishing.dispatch_due()


@app.task(name="notify.maintenance.forget_idempotency_keys", ignore_result=True)
def forget_idempotency_keys() -> int:
    """Release idempotency keys past their retention window."""
    return publishing.forget_idempotency_keys()


@task_prerun.connect
def _fresh_database_connection(**kwargs):
    # Celery's Django fix-up keeps connections across tasks (CELERY_DB_REUSE_MAX); this applies
    # CONN_MAX_AGE and CONN_HEALTH_CHECKS per task, as Django does per request.
    close_old_connections()


@worker_process_shutdown.connect
def _close_clients(**kwargs):
    close_all()


@app.task(name="notify.maintenance.noop", ignore_result=True)
def noop(counter_key: str) -> None:
    """Counts itself in Redis and does nothing else: the benchmark's baseline of what Celery and
    RabbitMQ alone cost per task on this machine."""
    from django_redis import get_redis_connection

    get_redis_connection("default").incr(counter_key)

"""Celery tasks. Thin on purpose: they carry ids and call the stage that does the work.

One task per channel (``notify.queues.task_name``), routed by that name to the channel's own
queue (``celeryconfig.task_routes``), so each channel has its own worker pool. A task carries up
to ``NOTIFY_TASK_BATCH`` delivery ids of its channel (notify.outbox).
"""

from celery.exceptions import Reject
from celery.signals import task_prerun, worker_init, worker_process_shutdown
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, close_old_connections

from channels.registry import close_all

from . import maintenance, providers, send
from .celery import app
from .queues import task_name


def _deliver_task(channel: str):
    @app.task(name=task_name(channel), acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def deliver(delivery_ids: list[str] | str) -> dict[str, int]:
        # A bare id is a message published by a version that sent one delivery per task.
        ids = [delivery_ids] if isinstance(delivery_ids, str) else delivery_ids
        try:
            return send.send_batch(ids, channel)
        except (OperationalError, InterfaceError) as exc:
            # The database stayed away longer than the send waits: put the message back rather
            # than acknowledge deliveries nobody has claimed or recorded.
            raise Reject(exc, requeue=True) from exc

    deliver.__doc__ = (f"Send a batch of {channel} deliveries by id (see notify.send.send_batch); "
                       "returns how many ended in each status.")
    return deliver


deliver_tasks = {channel: _deliver_task(channel) for channel in settings.NOTIFY_CHANNELS}


@app.task(name="notify.maintenance.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Move retries whose delay is over and sends whose worker died back into the outbox, and
    publish what no relay took (notify.maintenance.dispatch_due)."""
    return maintenance.dispatch_due()


@app.task(name="notify.maintenance.forget_idempotency_keys", ignore_result=True)
def forget_idempotency_keys() -> int:
    """Release idempotency keys past their retention window."""
    return maintenance.forget_idempotency_keys()


@app.task(name="notify.maintenance.forget_expired_tokens", ignore_result=True)
def forget_expired_tokens() -> int:
    """Delete expired OAuth2 access tokens."""
    return maintenance.forget_expired_tokens()


@app.task(name="notify.maintenance.rollup_analytics", ignore_result=True)
def rollup_analytics() -> int:
    """Count what was recorded since the last rollup into the analytics (notify.analytics)."""
    return maintenance.rollup_analytics()


@app.task(name="notify.maintenance.maintain_history", ignore_result=True)
def maintain_history() -> int:
    """Create the history's day partitions ahead and drop those past retention
    (notify.maintenance.maintain_history); returns how many partitions it created or dropped."""
    return maintenance.maintain_history()


@app.task(name="notify.maintenance.fan_out_broadcast", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fan_out_broadcast(broadcast_id: int) -> int:
    """Write batches of a broadcast for a few seconds, then queue the next task
    (notify.broadcast.run); returns how many recipients it took."""
    from . import broadcast

    return broadcast.run(broadcast_id)


@worker_init.connect
def _check_configuration(**kwargs):
    # A worker with a provider setting missing must not start (production settings). Celery logs
    # and swallows a receiver's exceptions, so the refusal is a SystemExit.
    try:
        providers.check_configuration()
    except ImproperlyConfigured as exc:
        raise SystemExit(f"ImproperlyConfigured: {exc}") from exc


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

"""Celery configuration: one durable RabbitMQ queue per channel, crash-safe acknowledgement.

Why each choice:
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after the
  task ran, and goes back to the queue if the worker process dies, so a crash loses nothing. The
  task is idempotent (it claims the delivery in PostgreSQL first), which makes this safe.
- ``worker_prefetch_multiplier = 1``: a worker holds one unacknowledged message per process, so a
  slow provider does not strand a backlog on one worker.
- Publisher confirms (``confirm_publish``): a publish returns once RabbitMQ has the message.
  The outbox relay turns it off for its own connection and awaits a round's confirms together
  (notify.outbox): it marks deliveries published only once RabbitMQ has confirmed every task.
- Retries never wait on the consumer (no long ``countdown``): a delayed retry is stored in
  PostgreSQL and re-published by the dispatcher, so no message outlives ``consumer_timeout``.
- ``NOTIFY_QUEUE_TYPE=quorum``: every durable queue is a quorum queue, replicated over the
  RabbitMQ cluster's nodes, so losing one node loses no message and stops no queue
  (docs/scaling.md, tests/test_quorum_cluster.py).
"""

from django.conf import settings
from kombu import Exchange, Queue

from notify.queues import DEAD_LETTER_EXCHANGE, MAINTENANCE_QUEUE, dead_letter_queue, queue_name, task_name

CHANNELS = settings.NOTIFY_CHANNELS

broker_url = settings.NOTIFY_BROKER_URL
broker_connection_retry_on_startup = True
broker_transport_options = {"confirm_publish": True}
broker_pool_limit = 10
result_backend = None
task_ignore_result = True

task_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# Celery's Django fix-up closes every database connection before and after each task unless
# this is set: a new PostgreSQL connection per message on the send path. Connections are kept
# and recycled every N tasks; notify.tasks applies CONN_MAX_AGE and CONN_HEALTH_CHECKS per task.
CELERY_DB_REUSE_MAX = 1000

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Above the longest a send may legitimately take: claim patience (60 s) + provider timeout +
# outcome patience (120 s) while the database restarts.
task_time_limit = 300
task_soft_time_limit = 240
# Task events cost one extra publish per task state; Flower switches them on in the workers
# while it runs (enable_events), so they are off unless someone is watching.
worker_send_task_events = settings.NOTIFY_TASK_EVENTS
task_send_sent_event = False

_direct = Exchange("notify", type="direct", durable=True)
_dead = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)

# Quorum queues (RabbitMQ 3.10+, for per-message TTL: the dispatcher's tasks expire), as Celery's
# "Using Quorum Queues" asks:
# - declared with ``x-queue-type: quorum``; classic queues keep no argument, so an existing
#   installation redeclares exactly what it has (a queue's type cannot change: README, migration);
# - ``worker_detect_quorum_queues`` (on) makes the workers' prefetch per consumer (quorum queues
#   refuse global QoS): static, ``worker_prefetch_multiplier`` × concurrency, which is what
#   notify sets anyway (no autoscale);
# - no broker priorities: quorum queues have none before RabbitMQ 4, and notify uses none either
#   (no ``x-max-priority``; a notification's ``priority`` is the provider's, e.g. apns-priority,
#   and lets it through quiet hours);
# - no ``x-delivery-limit`` of notify's own: a poison message is bounded by the delivery's
#   attempts in PostgreSQL (then the ``.dead`` queue); a message RabbitMQ 4 drops after its
#   default 20 redeliveries is re-published by the dispatcher (a lease that ran out, or
#   NOTIFY_REPUBLISH_STALE_AFTER);
# - ETA/countdown would need Celery's native delayed delivery: notify publishes none (retries
#   wait in PostgreSQL), so the workers leave out the step that declares its queues, which also
#   held each worker for ~17 s after its node was lost (notify.celery.WorkerConsumer).
QUORUM = settings.NOTIFY_QUEUE_TYPE == "quorum"
_arguments = {"x-queue-type": "quorum"} if QUORUM else None


def _queue(name: str, exchange: Exchange, routing_key: str) -> Queue:
    return Queue(name, exchange, routing_key=routing_key, durable=True, queue_arguments=_arguments)


task_queues = [_queue(queue_name(c), _direct, queue_name(c)) for c in CHANNELS] + [
    # Dead letters of each channel: kept until an operator inspects or replays them.
    _queue(dead_letter_queue(c), _dead, c) for c in CHANNELS
] + [_queue(MAINTENANCE_QUEUE, _direct, MAINTENANCE_QUEUE)]
# A queue Celery creates for a route not listed above gets the same type.
task_default_queue_type = settings.NOTIFY_QUEUE_TYPE
worker_detect_quorum_queues = True
worker_consumer = "notify.celery:WorkerConsumer"

task_default_queue = MAINTENANCE_QUEUE
task_default_exchange = "notify"
task_default_routing_key = MAINTENANCE_QUEUE
task_default_delivery_mode = "persistent"

# Routed by task name: the channel's task → the channel's queue.
task_routes = {task_name(c): {"queue": queue_name(c), "routing_key": queue_name(c)} for c in CHANNELS}
task_routes.update({"notify.maintenance.*": {"queue": MAINTENANCE_QUEUE, "routing_key": MAINTENANCE_QUEUE}})

beat_schedule = {
    "dispatch-due-deliveries": {"task": "notify.maintenance.dispatch_due", "schedule": 1.0, "options": {"expires": 5}},
    "forget-idempotency-keys": {"task": "notify.maintenance.forget_idempotency_keys", "schedule": 3600.0, "options": {"expires": 600}},
    "forget-expired-oauth-tokens": {"task": "notify.maintenance.forget_expired_tokens", "schedule": 3600.0,
                                    "options": {"expires": 600}},
    # Hourly, though a day needs one run: a run that could not get a lock leaves it to the next.
    "maintain-history-partitions": {"task": "notify.maintenance.maintain_history", "schedule": 3600.0,
                                    "options": {"expires": 600}},
    # A missed run costs nothing: the next one counts what it left.
    "rollup-analytics": {"task": "notify.maintenance.rollup_analytics", "schedule": settings.NOTIFY_ANALYTICS_INTERVAL,
                         "options": {"expires": settings.NOTIFY_ANALYTICS_INTERVAL}},
}

"""The store: every hand-written SQL statement of notify, and the prepared cursor they run on.

The hot paths (the API's insert, the worker's claim and outcome, the relay's round) are single
statements, each doing its whole job in one round trip: the row changes, the delivery-log rows
(:func:`_log_rows`, the one writer of ``notify_deliverylog``) and the relay's wake-up. The
recipient's preferences have one writer too (:func:`set_preferences`): the API, provider opt-outs
(SMS STOP, Twilio 21610), one-click unsubscribe all go through it, and it clears the recipient's
cached profile. The analytics' rollup and reads (the last section) are here too: the rollup reads
what the statements above stamped, and says why its watermark is exact.

Django's psycopg backend binds parameters on the client and never prepares, so PostgreSQL parses
and plans every statement again. :func:`prepared_cursor` lets PostgreSQL keep the plans per
connection (psycopg's ``prepare=True``, which needs the connection's ``prepare_threshold`` set:
settings.DATABASES). Behind a transaction-pooling PgBouncer older than 1.21, set
``NOTIFY_DB_PREPARE=0``.

Timestamps come from the database's clock everywhere, so API, relay and workers agree.

``notify_delivery`` is partitioned by day of ``created_at`` (notify.partitions). A statement that
picks rows and then updates them names the picked rows' partitions too: the hot ones by the span
of their ``created_at`` (:data:`_IN_SPAN`), the others by joining on ``(id, created_at)``, not
``id`` alone (a hash join over every partition was what PostgreSQL chose otherwise: 0.7 s
instead of 20 ms for the relay's 1000 rows).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import psycopg
from django.conf import settings
from django.db import connection, transaction
from psycopg.types.json import Jsonb

from . import cache, ids
from .models import FINAL_STATUSES, REACHED_PROVIDER, RECEIPT_RANK

#: The PostgreSQL LISTEN/NOTIFY channel the outbox relay waits on.
OUTBOX_EVENT = "notify_outbox"
#: Longest provider answer kept in the delivery log, in characters of JSON.
ANSWER_LIMIT = 8000


class _PreparingCursor(psycopg.Cursor):
    def execute(self, query, params=None, **kwargs):
        kwargs.setdefault("prepare", True if settings.NOTIFY_DB_PREPARE else False)
        return super().execute(query, params, **kwargs)


@contextmanager
def prepared_cursor() -> Iterator[psycopg.Cursor]:
    """A server-side-binding psycopg cursor on Django's connection (so in the same transaction)
    whose statements are prepared, and whose errors are raised as Django's
    (``django.db.IntegrityError``, ``OperationalError``, ...)."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors, _PreparingCursor(connection.connection) as cursor:
        yield cursor


def _log_rows(source: str) -> str:
    """The INSERT writing one delivery-log row per row of ``source`` (a CTE or subquery whose
    columns are named as the log's: ``delivery_id, from_status, to_status, attempt, reason,
    provider_status, provider_answer, duration_ms``). Every log row is written through this."""
    return f"""INSERT INTO notify_deliverylog (delivery_id, at, from_status, to_status, attempt, reason,
                                     provider_status, provider_answer, duration_ms)
    SELECT delivery_id, now(), from_status, to_status, attempt, reason, provider_status, provider_answer,
           duration_ms FROM {source}"""


def _wake_relay_sql(condition: str = "true") -> str:
    return f"SELECT pg_notify('{OUTBOX_EVENT}', '') WHERE {condition}"


def wake_relay(cursor) -> None:
    """Ask PostgreSQL to wake the outbox relay when the current transaction commits (a rolled
    back transaction wakes nobody; several notifies in one transaction arrive as one)."""
    cursor.execute(_wake_relay_sql())


def answer_json(raw: Any) -> str:
    """A provider's answer as JSON for the log; a longer one is kept as a cut string, still
    valid JSON (cutting the JSON text itself would make the jsonb cast, and the outcome, fail)."""
    text = json.dumps(dict(raw), default=str, ensure_ascii=False)
    if len(text) <= ANSWER_LIMIT:
        return text
    # Quoting the cut text as a JSON string at most doubles it (every '"' and '\\' escaped).
    return json.dumps({"truncated": text[:ANSWER_LIMIT // 2 - 20]}, ensure_ascii=False)


# -- accept ------------------------------------------------------------------------------------
_IDEMPOTENT_SQL = """
SELECT idempotency_key, request_hash, response FROM notify_notification
WHERE app_id = %s AND idempotency_key = ANY(%s::varchar[])
"""


def idempotent_responses(app_id: int, keys: Sequence[str]) -> dict[str, tuple[str, dict]]:
    """Earlier notifications of ``app_id`` with these idempotency keys: key → (request hash,
    the 202 body answered then)."""
    if not keys:
        return {}
    with prepared_cursor() as cursor:
        cursor.execute(_IDEMPOTENT_SQL, [app_id, list(keys)])
        rows = cursor.fetchall()
    # Django's connection loads jsonb as text.
    return {key: (digest, json.loads(body) if isinstance(body, str) else body) for key, digest, body in rows}


# The rows are bound as two JSON documents, expanded by jsonb_to_recordset: one text parameter
# each, encoded by the json module's C encoder, with the JSON columns (data, content, response,
# fallback) inside them as they are. Bound as 29 typed arrays (the way before), a single send
# took 0.18 ms more of the API's CPU (2.86 ms instead of 2.68, in process), and the hot path is
# the single send; a 10,000-recipient bulk call's write was 0.3 s faster that way, in a call of
# five seconds (notify.bulk).
_INSERT_SQL = f"""
WITH notification AS (
    INSERT INTO notify_notification (id, app_id, api_key_id, recipient_id, idempotency_key, request_hash,
        category, template_id, template_version, locale, data, content, priority, ttl, expires_at, response,
        send_at, fallback, created_at)
    SELECT id, app_id, api_key_id, recipient_id, idempotency_key, request_hash, category, template_id,
           template_version, locale, data, content, priority, ttl, expires_at, response, send_at, fallback, now()
    FROM jsonb_to_recordset(%(notifications)s::jsonb) AS n(id uuid, app_id bigint, api_key_id varchar,
        recipient_id bigint, idempotency_key varchar, request_hash varchar, category varchar, template_id bigint,
        template_version int, locale varchar, data jsonb, content jsonb, priority varchar, ttl int,
        expires_at timestamptz, response jsonb, send_at timestamptz, fallback jsonb)
    RETURNING 1
), delivery AS (
    INSERT INTO notify_delivery (id, notification_id, channel, provider, variant, step, device_id, address, status,
        reason, attempts, provider_message_id, created_at, updated_at, next_attempt_at, unknown_outcome)
    SELECT id, notification_id, channel, '', variant, step, device_id, address, status, reason, 0, '', now(), now(),
           COALESCE(due, now() + make_interval(secs => wait)), false
    FROM jsonb_to_recordset(%(deliveries)s::jsonb) AS d(id uuid, notification_id uuid, channel varchar,
        variant varchar, step int, device_id bigint, address text, status varchar, reason varchar, wait float8,
        due timestamptz)
    RETURNING id, status, reason
), parked AS (
    {_log_rows('''(SELECT id AS delivery_id, '' AS from_status, status AS to_status, 0 AS attempt, reason,
                          NULL::int AS provider_status, NULL::jsonb AS provider_answer, NULL::float8 AS duration_ms
                   FROM delivery WHERE status IN ('retrying', 'scheduled')) p''')}
)
-- The relay is woken at commit if anything is queued.
SELECT (SELECT count(*) FROM notification),
       (SELECT count(*) FROM (SELECT pg_notify(%(event)s::text, '') FROM delivery WHERE status = 'queued' LIMIT 1) w)
"""


def _instant(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def insert_notifications(notifications: Sequence[Any], deliveries: Sequence[Any]) -> None:
    """Insert notifications and their deliveries in one statement, log the ones parked
    ``retrying`` or ``scheduled`` (due at ``due``, a ``send_at`` or the end of quiet hours, else
    ``wait`` seconds from now, the breaker's cooldown), and wake the relay at commit if any is
    ``queued``. One statement: all or nothing by itself (autocommit), or part of the caller's
    transaction.

    Args:
        notifications: objects with the Notification model's attributes (aware datetimes).
        deliveries: objects with ``id, notification_id, channel, variant, step, device_id,
            address, status, reason, wait, due`` (``due``: an aware instant or None).
    Raises:
        IntegrityError: an idempotency key is taken (a concurrent request won).
    """
    params = {
        "event": OUTBOX_EVENT,
        "notifications": json.dumps([{
            "id": str(n.id), "app_id": n.app_id, "api_key_id": n.api_key_id, "recipient_id": n.recipient_id,
            "idempotency_key": n.idempotency_key, "request_hash": n.request_hash, "category": n.category,
            "template_id": n.template_id, "template_version": n.template_version, "locale": n.locale,
            "data": n.data, "content": n.content, "priority": n.priority, "ttl": n.ttl,
            "expires_at": _instant(n.expires_at), "response": n.response, "send_at": _instant(n.send_at),
            "fallback": n.fallback} for n in notifications], ensure_ascii=False, separators=(",", ":")),
        "deliveries": json.dumps([{
            "id": str(d.id), "notification_id": str(d.notification_id), "channel": d.channel,
            "variant": d.variant, "step": d.step, "device_id": d.device_id, "address": d.address,
            "status": d.status, "reason": d.reason, "wait": d.wait, "due": _instant(d.due)}
            for d in deliveries], ensure_ascii=False, separators=(",", ":")),
    }
    with prepared_cursor() as cursor:
        cursor.execute(_INSERT_SQL, params)


# -- outbox ------------------------------------------------------------------------------------
#: The partitions a statement's update may touch: those of the rows ``rows`` (a CTE with ``id,
#: created_at``) picked. Its bounds are InitPlans, so PostgreSQL prunes the other partitions when
#: the statement starts; joined on the rows instead, it planned a hash join over every partition.
_IN_SPAN = ("d.created_at BETWEEN (SELECT min(created_at) FROM {rows}) AND (SELECT max(created_at) FROM {rows})")

_TAKE_OUTBOX_SQL = f"""
WITH batch AS (
    SELECT id, created_at FROM notify_delivery
    WHERE status = 'queued' AND published_at IS NULL
      AND updated_at <= now() - make_interval(secs => %(older_than)s::float8)
    ORDER BY created_at LIMIT %(limit)s::int FOR UPDATE SKIP LOCKED
)
UPDATE notify_delivery d SET published_at = now()
WHERE d.id = ANY(ARRAY(SELECT id FROM batch)) AND {_IN_SPAN.format(rows='batch')}
RETURNING d.id, d.channel
"""
#: The relay holds its rows' locks while it publishes, and a worker that got a message first
#: waits for them in its claim: PostgreSQL ends a relay transaction stuck longer than this.
_RELAY_TX_LIMIT = "SET LOCAL idle_in_transaction_session_timeout = '30s'"


def take_outbox(cursor, limit: int, older_than: float) -> list[tuple[Any, str]]:
    """Mark up to ``limit`` outbox rows published and return their ``(id, channel)``; the rows
    stay locked until the caller's transaction ends (it publishes, then commits or rolls back).

    Args:
        older_than: only rows untouched for this many seconds.
    """
    return _take(cursor, _TAKE_OUTBOX_SQL, limit, older_than)


def _take(cursor, sql: str, limit: int, older_than: float) -> list[tuple]:
    """The rows an outbox statement took for the relay; when it took any, the caller's
    transaction gets :data:`_RELAY_TX_LIMIT`."""
    cursor.execute(sql, {"older_than": older_than, "limit": limit})
    rows = cursor.fetchall()
    if rows:
        cursor.execute(_RELAY_TX_LIMIT, prepare=False)
    return rows


_TAKE_OUTBOX_BATCHES_SQL = """
DELETE FROM notify_outboxbatch WHERE id = ANY(ARRAY(
    SELECT id FROM notify_outboxbatch
    WHERE created_at <= now() - make_interval(secs => %(older_than)s::float8)
    ORDER BY id LIMIT %(limit)s::int FOR UPDATE SKIP LOCKED))
RETURNING channel, delivery_ids::text[]  -- as text: the relay publishes them as such
"""


def take_outbox_batches(cursor, limit: int, older_than: float) -> list[tuple[str, list]]:
    """Delete up to ``limit`` batch rows of the outbox (notify.models.OutboxBatch), oldest first,
    and return their ``(channel, [delivery id (str), ...])``; the deletion takes effect only if the
    caller's transaction commits (it publishes, then commits or rolls back).

    Args:
        older_than: only rows written at least this many seconds ago.
    """
    return _take(cursor, _TAKE_OUTBOX_BATCHES_SQL, limit, older_than)


_HAND_BACK_SQL = f"""
WITH back AS (
    UPDATE notify_delivery SET published_at = NULL, updated_at = now()
    WHERE id = ANY(%s::uuid[]) AND status = 'queued' RETURNING 1
)
SELECT count(*), (SELECT count(*) FROM ({_wake_relay_sql("EXISTS (SELECT 1 FROM back)")}) w) FROM back
"""


def hand_back(delivery_ids: Sequence[str]) -> int:
    """Put still-queued deliveries back into the outbox (a worker that ran out of its batch's
    time budget); returns how many. Rows another worker already took are left alone."""
    with transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute(_HAND_BACK_SQL, [list(delivery_ids)])
        return cursor.fetchone()[0]


# -- send --------------------------------------------------------------------------------------
_CLAIM_SQL = f"""
WITH claimed AS (
    UPDATE notify_delivery d
    SET status = 'sending', attempts = d.attempts + 1, updated_at = clock_timestamp(),
        -- clock_timestamp(): time spent waiting for the relay's row lock is not taken from the lease
        lease_until = clock_timestamp() + make_interval(secs => %s::float8)
    FROM notify_notification n
    JOIN notify_recipient r ON r.id = n.recipient_id
    JOIN notify_app a ON a.id = n.app_id
    WHERE d.id = %s::uuid AND d.status = 'queued' AND n.id = d.notification_id
    RETURNING d.id, d.channel, d.address, d.attempts, d.unknown_outcome, d.device_id, d.step,
              d.created_at AS delivery_created_at,  -- its partition, for the outcome's write
              d.reason AS prior_reason,  -- the claim leaves it: why the last attempt ended
              -- How many deliveries of the notification share the channel (its devices): the
              -- rate limit counts them once (notify.ratelimit). A notification's deliveries are
              -- all written by one statement (insert_notifications, the broadcast fan-out), so
              -- they share created_at: the look-up stays in d's day partition.
              (SELECT count(*) FROM notify_delivery s
               WHERE s.notification_id = d.notification_id AND s.channel = d.channel
                 AND s.created_at = d.created_at) AS channel_deliveries,
              (SELECT subscription FROM notify_device WHERE id = d.device_id) AS subscription,
              (SELECT active FROM notify_device WHERE id = d.device_id) AS device_active,
              n.id AS notification_id, n.app_id, n.content, n.priority, n.category, n.fallback, n.expires_at,
              n.created_at, n.recipient_id,
              -- What the recipient decides now, not at accept time (notify.policy): the category's
              -- own preference row wins over the channel-wide one (NULL: neither), the category's
              -- rules, the mute, the time zone and quiet hours.
              (SELECT p.enabled FROM notify_preference p
               WHERE p.recipient_id = n.recipient_id AND p.channel = d.channel AND p.category IN (n.category, '')
               ORDER BY p.category = '' LIMIT 1) AS preference,
              (SELECT s.reason FROM notify_addresssuppression s
               WHERE s.app_id = n.app_id AND s.channel = d.channel AND s.address = lower(d.address))
                  AS address_suppressed,
              (SELECT jsonb_build_object('required', c.required, 'defaults', c.defaults,
                                         'rate_limits', c.rate_limits, 'over_limit', c.over_limit,
                                         'quiet_hours', c.quiet_hours, 'tracking', c.tracking)
               FROM notify_category c WHERE c.app_id = n.app_id AND c.name = n.category) AS category_rules,
              r.muted, r.muted_until, r.timezone, r.quiet_hours, a.quiet_hours AS app_quiet_hours,
              -- The language of what the recipient reads: the template's locale, else theirs.
              COALESCE(NULLIF(n.locale, ''), r.locale) AS locale,
              -- Whether an email gets the open pixel and click redirects (notify.tracking.switches).
              a.track_opens, a.track_clicks,
              -- provider → version of the app's own provider settings (NULL: none): a worker keeps
              -- the app's adapter while the version holds (notify.providers.adapter)
              (SELECT jsonb_object_agg(pc.provider, pc.version) FROM notify_providercredential pc
               WHERE pc.app_id = n.app_id) AS credential_versions,
              extract(epoch FROM n.expires_at - now()) AS ttl_left,
              extract(epoch FROM now() - n.created_at) AS age
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, 'queued' AS from_status, 'sending' AS to_status, attempts AS attempt,
                          '' AS reason, NULL::int AS provider_status, NULL::jsonb AS provider_answer,
                          NULL::float8 AS duration_ms FROM claimed) c''')}
)
SELECT * FROM claimed
"""


#: Column names of the statements whose rows become dicts, by statement text (see _column_names).
_COLUMNS: dict[str, tuple[str, ...]] = {}


def _column_names(cursor: psycopg.Cursor, sql: str) -> tuple[str, ...]:
    """The column names of ``sql``, which ``cursor`` just ran, read once per statement:
    psycopg builds a Column object per column on every ``cursor.description``, which for the
    claim's 32 columns was a sixth of a worker's CPU per send."""
    names = _COLUMNS.get(sql)
    if names is None:
        names = _COLUMNS[sql] = tuple(column.name for column in cursor.description)
    return names


def claim(delivery_id: str) -> dict[str, Any] | None:
    """Move a ``queued`` delivery to ``sending`` with a lease of ``NOTIFY_SEND_LEASE`` seconds
    and log it; return what its send needs (with what the recipient decides now: preference,
    a suppression of the address, category rules, mute, time zone, quiet hours; and the device's current state; the app's and
    category's tracking switches; the versions of the app's own provider settings), or None when it is not queued (another worker has
    it, or it is done). One autocommit statement."""
    with prepared_cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [settings.NOTIFY_SEND_LEASE, delivery_id])
        row = cursor.fetchone()
        if row is None:
            return None
        values = dict(zip(_column_names(cursor, _CLAIM_SQL), row))
    for key in ("content", "subscription", "category_rules", "fallback", "credential_versions"):
        if isinstance(values[key], str):
            values[key] = json.loads(values[key])
    return values


#: The claim of a whole batch: the same statement over every id of the batch. The rows are
#: locked in id order first, so two workers claiming overlapping batches (a redelivered message)
#: wait for each other instead of deadlocking; the outer ``status = 'queued'`` is re-checked on
#: the row as the lock found it (READ COMMITTED's re-check), so each delivery is claimed once.
_CLAIM_BATCH_SQL = _CLAIM_SQL.replace(
    "WITH claimed AS (",
    "WITH locked AS (SELECT id, created_at FROM notify_delivery WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE),\n"
    "claimed AS (").replace(
    "WHERE d.id = %s::uuid AND",
    f"WHERE d.id = ANY(ARRAY(SELECT id FROM locked)) AND {_IN_SPAN.format(rows='locked')} AND")
assert _CLAIM_BATCH_SQL != _CLAIM_SQL
#: The same, looking only in the day partitions the ids' times may be in (notify.ids.span):
#: PostgreSQL prunes the others when the statement starts, instead of probing each one's index.
_CLAIM_SPAN_SQL = _CLAIM_BATCH_SQL.replace(
    "WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE",
    "WHERE id = ANY(%s::uuid[]) AND created_at BETWEEN %s AND %s ORDER BY id FOR UPDATE")
assert _CLAIM_SPAN_SQL != _CLAIM_BATCH_SQL


def claim_batch(delivery_ids: Sequence[str]) -> list[dict[str, Any]]:
    """:func:`claim` for every id of ``delivery_ids`` in one autocommit statement: the rows of
    those still ``queued`` (now ``sending``, each with its lease and log row), in the order of
    ``delivery_ids``; ids not queued are left out.

    When every id is a UUIDv7 the claim looks only in the partitions of their span
    (:func:`notify.ids.span`); the ids it did not claim (done already, or a row whose clock
    strayed past the margin) are looked up once more everywhere, so the span can only save
    work, never miss a row."""
    delivery_ids = list(delivery_ids)
    bounds = ids.span(delivery_ids)
    with prepared_cursor() as cursor:
        if bounds is None:
            cursor.execute(_CLAIM_BATCH_SQL, [delivery_ids, settings.NOTIFY_SEND_LEASE])
            rows = cursor.fetchall()
        else:
            cursor.execute(_CLAIM_SPAN_SQL, [delivery_ids, *bounds, settings.NOTIFY_SEND_LEASE])
            rows = cursor.fetchall()
            found = {str(row[0]) for row in rows}
            rest = [d for d in delivery_ids if str(d) not in found]
            if rest:
                cursor.execute(_CLAIM_BATCH_SQL, [rest, settings.NOTIFY_SEND_LEASE])
                rows += cursor.fetchall()
        names = _column_names(cursor, _CLAIM_BATCH_SQL) if rows else ()
    order = {str(delivery_id): index for index, delivery_id in enumerate(delivery_ids)}
    claimed = []
    for row in rows:
        values = dict(zip(names, row))
        for key in ("content", "subscription", "category_rules", "fallback", "credential_versions"):
            if isinstance(values[key], str):
                values[key] = json.loads(values[key])
        claimed.append(values)
    claimed.sort(key=lambda values: order.get(str(values["id"]), 0))
    return claimed


def _rank_sql(status: str) -> str:
    """SQL: the :data:`~notify.models.RECEIPT_RANK` of the status expression ``status``, NULL for
    a status the provider has not reached."""
    cases = " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in RECEIPT_RANK.items())
    return f"(CASE {status} {cases} END)"


def _adopted_receipt() -> str:
    """SQL for the status a delivery takes when its provider accepted it: ``sent``, or the
    highest-ranked delivery event already recorded (a provider's callback can arrive before the
    worker writes its own outcome)."""
    return f"""COALESCE((SELECT e.kind FROM notify_deliveryevent e
                         WHERE e.delivery_id = notify_delivery.id AND {_rank_sql('e.kind')} > 0
                         ORDER BY {_rank_sql('e.kind')} DESC LIMIT 1), 'sent')"""


_RECORD_SQL = f"""
WITH updated AS (
    UPDATE notify_delivery SET status = CASE WHEN %(status)s::varchar = 'sent' THEN {_adopted_receipt()}
                                             ELSE %(status)s::varchar END,
        reason = %(reason)s::varchar, updated_at = now(),
        attempts = attempts - %(refund)s::int,
        provider = COALESCE(%(provider)s::varchar, provider),
        provider_message_id = COALESCE(%(message_id)s::varchar, provider_message_id),
        lease_until = NULL, unknown_outcome = false,
        next_attempt_at = now() + make_interval(secs => %(delay)s::float8),
        sent_at = CASE WHEN %(status)s::varchar = 'sent' THEN now() ELSE sent_at END
    WHERE id = %(id)s::uuid AND attempts = %(attempt)s::int AND status IN ('sending', 'queued')
    RETURNING id
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, 'sending' AS from_status, %(status)s::varchar AS to_status,
                          %(attempt)s::int AS attempt, %(reason)s::varchar AS reason,
                          %(provider_status)s::int AS provider_status, %(answer)s::jsonb AS provider_answer,
                          %(duration)s::float8 AS duration_ms FROM updated) u''')}
)
SELECT count(*) FROM updated
"""


def record_outcome(delivery_id: Any, attempt: int, status: str, reason: str, *, provider: str | None = None,
                   provider_message_id: str | None = None, provider_status: int | None = None,
                   answer: Any = None, delay: float = 0.0, duration_ms: float | None = None,
                   refund: bool = False) -> bool:
    """Write the outcome of attempt ``attempt`` and its log row in one statement.

    Args:
        delay: seconds until ``next_attempt_at`` (a retry's back-off).
        refund: give the attempt back (the provider was not called).
        answer: the provider's answer (a mapping) for the log, or None.
    Returns:
        False when the delivery changed hands meanwhile (its lease ran out and another worker
        took it): nothing was written.
    """
    params = {
        "refund": 1 if refund else 0, "id": delivery_id, "attempt": attempt, "status": status,
        "reason": reason[:128], "delay": delay, "provider": provider, "message_id": provider_message_id,
        "provider_status": provider_status or None,
        "answer": answer_json(answer) if answer is not None else None, "duration": duration_ms,
    }
    with prepared_cursor() as cursor:
        cursor.execute(_RECORD_SQL, params)
        return cursor.fetchone()[0] == 1


#: The outcomes of a batch: :data:`_RECORD_SQL` over arrays, one element per delivery.
_RECORD_BATCH_SQL = f"""
WITH o AS (
    SELECT * FROM unnest(%(id)s::uuid[], %(attempt)s::int[], %(status)s::varchar[], %(reason)s::varchar[],
                         %(refund)s::int[], %(provider)s::varchar[], %(message_id)s::varchar[],
                         %(provider_status)s::int[], %(answer)s::text[], %(delay)s::float8[],
                         %(duration)s::float8[])
        AS o(id, attempt, status, reason, refund, provider, message_id, provider_status, answer, delay, duration)
), updated AS (
    UPDATE notify_delivery SET status = CASE WHEN o.status = 'sent' THEN {_adopted_receipt()}
                                             ELSE o.status END,
        reason = o.reason, updated_at = now(),
        attempts = notify_delivery.attempts - o.refund,
        provider = COALESCE(o.provider, notify_delivery.provider),
        provider_message_id = COALESCE(o.message_id, notify_delivery.provider_message_id),
        lease_until = NULL, unknown_outcome = false,
        next_attempt_at = now() + make_interval(secs => o.delay),
        sent_at = CASE WHEN o.status = 'sent' THEN now() ELSE notify_delivery.sent_at END
    FROM o
    WHERE notify_delivery.id = o.id AND notify_delivery.attempts = o.attempt
      AND notify_delivery.status IN ('sending', 'queued') {{span}}
    RETURNING o.id, o.status, o.attempt, o.reason, o.provider_status, o.answer, o.duration
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, 'sending' AS from_status, status AS to_status,
                          attempt, reason, provider_status, answer::jsonb AS provider_answer,
                          duration AS duration_ms FROM updated) u''')}
)
SELECT id FROM updated
"""
#: Outcomes of claimed rows whose ``created_at`` the claim returned: the update names their
#: partitions (InitPlan bounds, pruned when the statement starts) instead of probing each one.
_RECORD_SPAN_SQL = _RECORD_BATCH_SQL.replace("{span}", "AND notify_delivery.created_at BETWEEN %(from)s AND %(to)s")
_RECORD_BATCH_SQL = _RECORD_BATCH_SQL.replace("{span}", "")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One delivery's outcome for :func:`record_outcomes`; the fields are
    :func:`record_outcome`'s arguments."""

    delivery_id: Any
    attempt: int
    status: str
    reason: str
    provider: str | None = None
    provider_message_id: str | None = None
    provider_status: int | None = None
    answer: Any = None
    delay: float = 0.0
    duration_ms: float | None = None
    refund: bool = False
    created_at: Any = None  # the row's own, as its claim returned it: names its partition


def record_outcomes(outcomes: Sequence[Outcome]) -> set[str]:
    """:func:`record_outcome` for many deliveries in one autocommit statement (one log row
    each). Returns the ids (as strings) whose outcome was written; a missing one changed hands
    meanwhile. Each row's write stands alone, so retrying the statement after a lost commit
    writes nothing twice (the attempt no longer matches a ``sending`` row)."""
    if not outcomes:
        return set()
    params = {
        "id": [str(o.delivery_id) for o in outcomes], "attempt": [o.attempt for o in outcomes],
        "status": [o.status for o in outcomes], "reason": [o.reason[:128] for o in outcomes],
        "refund": [1 if o.refund else 0 for o in outcomes], "provider": [o.provider for o in outcomes],
        "message_id": [o.provider_message_id for o in outcomes],
        "provider_status": [o.provider_status or None for o in outcomes],
        "answer": [answer_json(o.answer) if o.answer is not None else None for o in outcomes],
        "delay": [float(o.delay) for o in outcomes],
        "duration": [float(o.duration_ms) if o.duration_ms is not None else None for o in outcomes],
    }
    created = [o.created_at for o in outcomes]
    sql = _RECORD_BATCH_SQL
    if all(at is not None for at in created):
        # Exact, not estimated: each row's created_at as read by its claim (it never changes).
        sql = _RECORD_SPAN_SQL
        params.update({"from": min(created), "to": max(created)})
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return {str(row[0]) for row in cursor.fetchall()}


_DEACTIVATE_SQL = """
UPDATE notify_device d SET active = false, deactivated_reason = %s
FROM notify_recipient r WHERE d.id = %s AND r.id = d.recipient_id
RETURNING r.app_id, r.external_id
"""


def deactivate_device(device_id: int, reason: str) -> None:
    """Deactivate a device whose address is gone (a dead token); later sends skip it."""
    with prepared_cursor() as cursor:
        cursor.execute(_DEACTIVATE_SQL, [reason[:64], device_id])
        _forget(cursor.fetchall())


# -- fallback ----------------------------------------------------------------------------------
_LOCK_NOTIFICATION_SQL = "SELECT cancelled_at IS NOT NULL FROM notify_notification WHERE id = %s::uuid FOR UPDATE"
#: What a delivery's end means for the later steps of its notification's fallback.
FALLBACK_DONE = "fallback_not_needed"  # it was sent: they stand down
FALLBACK_STOP = "fallback_stopped"  # it ended in a way another channel must not undo (expired...)
FALLBACK_NEXT = "next"  # its channel cannot deliver: the next step goes once this one has ended
_FALLBACK_STAND_DOWN_SQL = f"""
WITH moved AS (
    UPDATE notify_delivery SET status = 'suppressed', reason = %(reason)s, updated_at = now()
    WHERE notification_id = %(notification)s::uuid AND step > %(step)s::int AND status = 'standby'
    RETURNING id, attempts
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, 'standby' AS from_status, 'suppressed' AS to_status,
                          attempts AS attempt, %(reason)s::varchar AS reason, NULL::int AS provider_status,
                          NULL::jsonb AS provider_answer, NULL::float8 AS duration_ms FROM moved) m''')}
)
SELECT count(*) FROM moved
"""
# The next step goes when every delivery of this step has ended, none of the notification's is
# sent, and no later step has started: each later row is still on standby or suppressed (at
# accept; or since its step started, and then that step's own end advances past it anyway, so
# skipping it here agrees). The last condition makes a repeated call change nothing.
_FALLBACK_NEXT_SQL = f"""
WITH next_step AS (
    SELECT min(step) AS step FROM notify_delivery
    WHERE notification_id = %(notification)s::uuid AND step > %(step)s::int AND status = 'standby'
      AND NOT EXISTS (SELECT 1 FROM notify_delivery
                      WHERE notification_id = %(notification)s::uuid AND (
                          (step = %(step)s::int AND status <> ALL(%(final)s::varchar[]))
                          OR status = ANY(%(reached)s::varchar[])
                          OR (step > %(step)s::int AND status NOT IN ('standby', 'suppressed'))))
), moved AS (
    UPDATE notify_delivery d SET status = 'queued', reason = '', published_at = NULL, updated_at = now(),
           next_attempt_at = now()
    FROM next_step WHERE d.notification_id = %(notification)s::uuid AND d.step = next_step.step
      AND d.status = 'standby'
    RETURNING d.id, d.attempts
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, 'standby' AS from_status, 'queued' AS to_status,
                          attempts AS attempt, 'fallback' AS reason, NULL::int AS provider_status,
                          NULL::jsonb AS provider_answer, NULL::float8 AS duration_ms FROM moved) m''')}
)
SELECT count(*), (SELECT count(*) FROM ({_wake_relay_sql("EXISTS (SELECT 1 FROM moved)")}) w) FROM moved
"""


def advance_fallback(notification_id: Any, step: int, move: str) -> int:
    """React to a delivery of step ``step`` of a notification with a fallback having ended in a
    final status; ``move`` says what that end means. :data:`FALLBACK_DONE` (it was sent) or
    :data:`FALLBACK_STOP` (it ended in a way that must not be followed by another channel:
    notify.models.cannot_deliver is false) → every ``standby`` delivery of later steps →
    ``suppressed`` with ``move`` as the reason. :data:`FALLBACK_NEXT` → once every delivery of
    the step has ended and none of the notification's is ``sent``, the deliveries of the next
    step that has ``standby`` ones → ``queued`` (the log says ``fallback``; the relay is woken
    at commit); a sibling of the step that stopped has already stood them down.
    A cancelled notification does not advance. Returns how many deliveries changed.

    Call it in the transaction that records the delivery's outcome (notify.send does). It first
    locks the notification's row, held to the commit: of two deliveries of one step ending at
    once, the second to get the lock sees the first's outcome and advance committed (each later
    statement sees what was committed before it started), so the step advances exactly once and
    never zero times. Idempotent: a repeated call (after a database outage) finds nothing left
    to change.
    """
    params = {"notification": notification_id, "step": step, "final": sorted(FINAL_STATUSES),
              "reached": sorted(REACHED_PROVIDER)}
    with transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute(_LOCK_NOTIFICATION_SQL, [notification_id])
        row = cursor.fetchone()
        if row is None or row[0]:
            return 0
        cursor.execute(_FALLBACK_NEXT_SQL if move == FALLBACK_NEXT else _FALLBACK_STAND_DOWN_SQL,
                       {**params, "reason": move})
        return cursor.fetchone()[0]


# -- preferences -------------------------------------------------------------------------------
_SET_PREFERENCES_SQL = """
WITH written AS (
    INSERT INTO notify_preference (recipient_id, channel, category, enabled, source, updated_at)
    SELECT r, c, %(category)s::varchar, %(enabled)s::boolean, %(source)s::varchar, now()
    FROM unnest(%(recipients)s::bigint[]) AS r CROSS JOIN unnest(%(channels)s::varchar[]) AS c
    ON CONFLICT (recipient_id, channel, category)
    DO UPDATE SET enabled = EXCLUDED.enabled, source = EXCLUDED.source, updated_at = now()
    RETURNING recipient_id
)
SELECT DISTINCT r.app_id, r.external_id FROM notify_recipient r JOIN written w ON w.recipient_id = r.id
"""


def set_preferences(recipient_ids: Iterable[int], channels: Sequence[str], category: str, enabled: bool,
                    source: str) -> None:
    """Opt recipients in or out of channels for a category (``""``: every category), and clear
    their cached profiles so the next send sees it. The one writer of preferences.

    Args:
        source: who decided (``api``, ``sms_stop``, ``sms_keyword``, ``unsubscribe``,
            ``provider``), kept on the row.
    """
    ids = list(recipient_ids)
    if not ids or not channels:
        return
    with prepared_cursor() as cursor:
        cursor.execute(_SET_PREFERENCES_SQL, {"recipients": ids, "channels": list(channels), "category": category,
                                              "enabled": enabled, "source": source})
        _forget(cursor.fetchall())


_RECIPIENTS_AT_SQL = "SELECT id FROM notify_recipient WHERE phone = %(address)s OR email = %(address)s"


def recipients_at(address: str) -> list[int]:
    """Ids of the recipients (of every app) whose phone number or email address is ``address``."""
    with prepared_cursor() as cursor:
        cursor.execute(_RECIPIENTS_AT_SQL, {"address": address})
        return [row[0] for row in cursor.fetchall()]


# Recipients are matched on the address as the suppression stores it (lower-cased): every
# recipient of the app at that address, whoever was sent the message that bounced.
_HOLDERS = """SELECT r.app_id, r.external_id FROM notify_recipient r
              WHERE r.app_id = %(app)s AND (lower(r.email) = lower(%(address)s) OR r.phone = %(address)s)"""
_SUPPRESS_ADDRESS_SQL = f"""
WITH added AS (
    INSERT INTO notify_addresssuppression (app_id, channel, address, reason, delivery_id, created_at)
    VALUES (%(app)s, %(channel)s, lower(%(address)s), %(reason)s, %(delivery)s::uuid, now())
    ON CONFLICT (app_id, channel, address) DO NOTHING
    RETURNING 1
), holders AS (
    {_HOLDERS} AND EXISTS (SELECT 1 FROM added)
)
SELECT (SELECT count(*) FROM added), (SELECT array_agg(external_id) FROM holders)
"""


def suppress_address(app_id: int, channel: str, address: str, reason: str, delivery_id: Any = None) -> bool:
    """Suppress ``address`` on ``channel`` for app ``app_id`` (notify.models.AddressSuppression)
    with a :class:`~notify.models.SuppressionReason`; the cached profiles of every recipient at
    it are cleared, so the next send is refused at once. Idempotent: False when it already was
    (the first reason stays). One statement."""
    with prepared_cursor() as cursor:
        cursor.execute(_SUPPRESS_ADDRESS_SQL, {"app": app_id, "channel": channel, "address": address,
                                               "reason": reason, "delivery": delivery_id})
        added, holders = cursor.fetchone()
    _forget((app_id, external_id) for external_id in holders or ())
    return bool(added)


def forget_address_holders(app_id: int, address: str) -> None:
    """Clear the cached profiles of app ``app_id``'s recipients at ``address`` (after a
    suppression of it was removed)."""
    with prepared_cursor() as cursor:
        cursor.execute(_HOLDERS, {"app": app_id, "address": address})
        _forget(cursor.fetchall())


def _forget(rows: Iterable[tuple[int, str]]) -> None:
    """Clear cached profiles now and again after the commit (a send between the two could
    otherwise cache the profile as it was)."""
    for app_id, external_id in rows:
        cache.forget_recipient(app_id, external_id)  # which deletes again after the commit


# -- provider events -----------------------------------------------------------------------------
_DELIVERY_EVENT_SQL = f"""
WITH d AS (
    SELECT d.id, d.status, d.attempts, d.channel, d.address, n.recipient_id, n.app_id, n.category
    FROM notify_delivery d JOIN notify_notification n ON n.id = d.notification_id
    WHERE d.id = %(id)s::uuid
      AND (%(message_id)s::varchar IS NULL OR d.provider_message_id IN ('', %(message_id)s::varchar))
    FOR UPDATE OF d
), event AS (
    INSERT INTO notify_deliveryevent (delivery_id, kind, occurred_at, received_at, reason, data)
    SELECT id, %(kind)s::varchar, %(at)s::timestamptz, now(), %(reason)s::varchar, %(data)s::jsonb FROM d
    ON CONFLICT (delivery_id, kind) DO NOTHING
    RETURNING delivery_id
), moved AS (
    UPDATE notify_delivery u SET status = %(kind)s::varchar, updated_at = now()
    FROM d WHERE u.id = d.id AND EXISTS (SELECT 1 FROM event)
      AND {_rank_sql('d.status')} < {_rank_sql('%(kind)s::varchar')}
    RETURNING u.id, d.status AS old_status, u.attempts
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, old_status AS from_status, %(kind)s::varchar AS to_status,
                          attempts AS attempt, %(reason)s::varchar AS reason, NULL::int AS provider_status,
                          %(data)s::jsonb AS provider_answer, NULL::float8 AS duration_ms FROM moved) m''')}
)
SELECT (SELECT count(*) FROM event), (SELECT count(*) FROM moved), recipient_id, app_id, channel, category,
       address, status
FROM d
"""


@dataclasses.dataclass(frozen=True)
class EventOutcome:
    """What :func:`record_delivery_event` did, and whose delivery it was.

    Attributes:
        recorded: False when an event of this kind was already recorded for the delivery (a
            provider's retry, a second open): nothing was written.
        moved: the delivery's status moved to the event's kind (a higher rank than it had).
        status: the delivery's status before the event.
        recipient_id, app_id, channel, category, address: the delivery's recipient, app,
            channel, notification category and address as sent (an E.164 number, an email).
    """

    recorded: bool
    moved: bool
    status: str
    recipient_id: int
    app_id: int
    channel: str
    category: str
    address: str


def record_delivery_event(delivery_id: Any, kind: str, occurred_at: datetime.datetime, *,
                          provider_message_id: str | None = None, reason: str = "",
                          data: Any = None) -> EventOutcome | None:
    """Record what a provider or the recipient reported about a delivery, once per kind, in one
    statement: the event row; the delivery's status moved to ``kind`` when that ranks higher
    in :data:`~notify.models.RECEIPT_RANK` than its status (never backwards; a status before
    ``sent`` is left to the worker, whose outcome adopts the event: :func:`_adopted_receipt`);
    a log row for a move.

    Args:
        delivery_id: the delivery (a UUID or its string).
        kind: an :class:`~notify.models.EventKind` value.
        occurred_at: the provider's time of the event (aware datetime).
        provider_message_id: when given, the event is taken only if the delivery carries this
            provider message id, or none yet (the provider's event beat the worker's outcome,
            which stores the id): a signed callback about another message changes nothing.
        reason: the provider's error code or bounce type, at most 128 characters kept.
        data: the event as received (JSON-serialisable; mask personal data before).
    Returns:
        None when there is no such delivery (or its message id differs), else an
        :class:`EventOutcome`.
    """
    params = {"id": str(delivery_id), "kind": kind, "at": occurred_at, "message_id": provider_message_id,
              "reason": (reason or "")[:128], "data": answer_json(data) if data is not None else None}
    with prepared_cursor() as cursor:
        cursor.execute(_DELIVERY_EVENT_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return EventOutcome(bool(row[0]), bool(row[1]), row[7], row[2], row[3], row[4], row[5], row[6])


# -- maintenance ---------------------------------------------------------------------------------
_MOVE_DUE_SQL = """
WITH due AS (
    SELECT id, created_at, status AS old_status FROM notify_delivery
    WHERE {where}
    ORDER BY next_attempt_at NULLS FIRST
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE notify_delivery d SET status = 'queued', published_at = NULL, updated_at = now(),
           lease_until = NULL, unknown_outcome = d.unknown_outcome OR due.old_status = 'sending'
    FROM due WHERE d.id = due.id AND d.created_at = due.created_at AND d.id = ANY(ARRAY(SELECT id FROM due))
      AND {span}
    RETURNING d.id, d.attempts, due.old_status
), logged AS (
    {log}
)
SELECT count(*), (SELECT count(*) FROM ({wake}) w) FROM moved
"""
_MOVED_LOG = _log_rows('''(SELECT id AS delivery_id, old_status AS from_status, 'queued' AS to_status,
                                  attempts AS attempt,
                                  CASE old_status WHEN 'sending' THEN 'lease_expired' WHEN 'scheduled' THEN 'due'
                                                  ELSE 'retry_due' END AS reason,
                                  NULL::int AS provider_status, NULL::jsonb AS provider_answer,
                                  NULL::float8 AS duration_ms FROM moved) m''')
_MOVE_WAKE = _wake_relay_sql("EXISTS (SELECT 1 FROM moved)")
#: The dispatcher's clock: the database's, unless the caller gives an instant (a test stepping
#: a clock across a daylight-saving change); only what is due is read on it, the rows' own
#: timestamps stay the database's.
_DUE_CLOCK = "COALESCE(%(now)s::timestamptz, now())"
#: Due retries of channels that are not held, due scheduled deliveries, and sends whose worker died.
_DUE_SQL = _MOVE_DUE_SQL.format(span=_IN_SPAN.format(rows="due"), where=f"""
    (status = 'retrying' AND next_attempt_at <= {_DUE_CLOCK} AND NOT channel = ANY(%(held)s))
    OR (status = 'scheduled' AND next_attempt_at <= {_DUE_CLOCK})
    OR (status = 'sending' AND lease_until < {_DUE_CLOCK})""", log=_MOVED_LOG, wake=_MOVE_WAKE)
#: One due retry of a held channel: the dispatcher's probe.
_PROBE_SQL = _MOVE_DUE_SQL.format(span=_IN_SPAN.format(rows="due"),
    where=f"status = 'retrying' AND next_attempt_at <= {_DUE_CLOCK} AND channel = %(channel)s",
    log=_MOVED_LOG, wake=_MOVE_WAKE)
#: Published long ago and never claimed: the broker lost the message. Not a delivery whose batch
#: row still waits for the relay (notify.models.OutboxBatch: marked published when written, with
#: its row's created_at): that row publishes it.
_STALE_SQL = f"""
WITH picked AS (
    SELECT id, created_at FROM notify_delivery
    WHERE status = 'queued'
      AND published_at < LEAST(now() - make_interval(secs => %(after)s::float8),
                               (SELECT min(created_at) FROM notify_outboxbatch))
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), stale AS (
    UPDATE notify_delivery d SET published_at = NULL
    WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) AND {_IN_SPAN.format(rows='picked')}
    RETURNING 1
)
SELECT count(*), (SELECT count(*) FROM ({_wake_relay_sql("EXISTS (SELECT 1 FROM stale)")}) w) FROM stale
"""


def move_due(held: Sequence[str], limit: int, now: datetime.datetime | None = None) -> int:
    """Due retries of channels not in ``held``, due ``scheduled`` deliveries (a ``send_at``, quiet
    hours) and sends whose lease ran out → ``queued`` in the outbox (logged; the relay woken at
    commit); returns how many.

    Args:
        now: the instant "due" is read at (aware); None, as in production: the database's
            ``now()``.
    """
    with prepared_cursor() as cursor:
        cursor.execute(_DUE_SQL, {"held": list(held), "limit": limit, "now": now})
        return cursor.fetchone()[0]


def move_probe(channel: str, now: datetime.datetime | None = None) -> int:
    """One due retry of a held ``channel`` → ``queued`` (the probe of its breaker); ``now`` as
    for :func:`move_due`."""
    with prepared_cursor() as cursor:
        cursor.execute(_PROBE_SQL, {"channel": channel, "limit": 1, "now": now})
        return cursor.fetchone()[0]


def unpublish_stale(after: float, limit: int) -> int:
    """Queued deliveries published more than ``after`` seconds ago and never claimed → back
    into the outbox; returns how many. While a batch row of the outbox waits, nothing marked
    published since it was written counts (its own deliveries are among them)."""
    with prepared_cursor() as cursor:
        cursor.execute(_STALE_SQL, {"after": after, "limit": limit})
        return cursor.fetchone()[0]


_REPLAY_SQL = f"""
WITH chosen AS (
    SELECT id, created_at FROM notify_delivery
    WHERE status = 'dead_lettered' AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
      AND (%(channel)s::varchar IS NULL OR channel = %(channel)s::varchar)
    FOR UPDATE SKIP LOCKED
), replayed AS (
    UPDATE notify_delivery d SET status = 'queued', attempts = 0, published_at = NULL, updated_at = now(),
           reason = 'replayed', unknown_outcome = false
    FROM chosen WHERE d.id = chosen.id AND d.created_at = chosen.created_at
    RETURNING d.id
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, 'dead_lettered' AS from_status, 'queued' AS to_status, 0 AS attempt,
                          'replayed' AS reason, NULL::int AS provider_status, NULL::jsonb AS provider_answer,
                          NULL::float8 AS duration_ms FROM replayed) r''')}
)
SELECT count(*), (SELECT count(*) FROM ({_wake_relay_sql("EXISTS (SELECT 1 FROM replayed)")}) w) FROM replayed
"""


def replay_dead_letters(delivery_ids: Sequence[str] | None, channel: str | None) -> int:
    """Dead-lettered deliveries (these, or all; of ``channel`` if given) → ``queued`` with a fresh
    attempt budget, logged; the relay publishes them once this commits. Returns how many."""
    with transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute(_REPLAY_SQL, {"ids": None if delivery_ids is None else list(delivery_ids),
                                     "channel": channel})
        return cursor.fetchone()[0]


# -- cancel ------------------------------------------------------------------------------------
#: What a cancel takes back: deliveries no worker has started. A ``queued`` one whose message is
#: already on RabbitMQ is safe to take: a worker's claim only takes ``queued`` rows.
CANCELLABLE = ("scheduled", "queued", "retrying", "standby")
_CANCEL_SQL = f"""
WITH target AS (
    -- The notification first, as advance_fallback locks it: the same order, so the two cannot deadlock.
    SELECT id FROM notify_notification WHERE id = %(id)s::uuid AND app_id = %(app)s::bigint FOR UPDATE
), chosen AS (
    SELECT d.id, d.created_at, d.status AS old_status FROM notify_delivery d
    WHERE d.notification_id IN (SELECT id FROM target) AND d.status = ANY(%(cancellable)s::varchar[])
    FOR UPDATE
), cancelled AS (
    UPDATE notify_delivery d SET status = 'cancelled', reason = 'cancelled', updated_at = now(),
           lease_until = NULL
    FROM chosen WHERE d.id = chosen.id AND d.created_at = chosen.created_at
    RETURNING d.id, d.attempts, chosen.old_status
), marked AS (
    UPDATE notify_notification SET cancelled_at = now()
    WHERE id IN (SELECT id FROM target) AND EXISTS (SELECT 1 FROM cancelled)
    RETURNING 1
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, old_status AS from_status, 'cancelled' AS to_status,
                          attempts AS attempt, 'cancelled' AS reason, NULL::int AS provider_status,
                          NULL::jsonb AS provider_answer, NULL::float8 AS duration_ms FROM cancelled) c''')}
)
SELECT (SELECT count(*) FROM target), ARRAY(SELECT id FROM cancelled), (SELECT count(*) FROM marked)
"""


def cancel(app_id: int, notification_id: Any) -> list | None:
    """Cancel what of notification ``notification_id`` (of app ``app_id``) has not started:
    every delivery in one of :data:`CANCELLABLE` → ``cancelled`` (reason ``cancelled``, logged),
    and the notification's ``cancelled_at`` set; one statement. A delivery already ``sending``
    or finished stays as it is.

    Returns:
        The ids (UUIDs) of the deliveries it cancelled (empty: nothing was left to cancel), or
        None when the app has no such notification.
    """
    with prepared_cursor() as cursor:
        cursor.execute(_CANCEL_SQL, {"id": notification_id, "app": app_id, "cancellable": list(CANCELLABLE)})
        found, cancelled, _ = cursor.fetchone()
    return list(cancelled) if found else None


# -- erasure -------------------------------------------------------------------------------------
#: The recipient's row, locked for the erasure: who it was (``app_id, external_id``).
_ERASE_LOCK_SQL = "SELECT app_id, external_id FROM notify_recipient WHERE id = %(r)s FOR UPDATE"
#: Each statement of an erasure, by the count it gives (its row count), in the order they run:
#: the deliveries first (a worker recording an outcome holds its delivery, then its notification:
#: taking the deliveries first waits for it instead of deadlocking with it).
_ERASE_SQL = {
    # The recipient's deliveries: the address goes, and the device, deleted below, with it.
    # Status, channel, provider, variant, times and message id stay.
    "deliveries": """
        UPDATE notify_delivery SET address = '', device_id = NULL
        WHERE notification_id IN (SELECT id FROM notify_notification WHERE recipient_id = %(r)s)""",
    # Another recipient's deliveries to one of its devices (the token was registered to them
    # before it moved to this recipient): the same.
    "device_deliveries": """
        UPDATE notify_delivery SET address = '', device_id = NULL
        WHERE device_id IN (SELECT id FROM notify_device WHERE recipient_id = %(r)s)""",
    # A provider's answer may echo the address (Twilio's "to", an APNs token in a 410's body);
    # the event data is masked already, but is the recipient's all the same.
    "answers": """
        UPDATE notify_deliverylog SET provider_answer = NULL
        WHERE provider_answer IS NOT NULL AND delivery_id IN (
            SELECT d.id FROM notify_delivery d JOIN notify_notification n ON n.id = d.notification_id
            WHERE n.recipient_id = %(r)s)""",
    "events": """
        UPDATE notify_deliveryevent SET data = NULL
        WHERE data IS NOT NULL AND delivery_id IN (
            SELECT d.id FROM notify_delivery d JOIN notify_notification n ON n.id = d.notification_id
            WHERE n.recipient_id = %(r)s)""",
    # The template data and the rendered content (a name, an order, a code), and the ``to`` of
    # each delivery in the stored 202 (an idempotent replay answers it, without the addresses).
    "notifications": """
        UPDATE notify_notification n SET data = '{}'::jsonb, content = '{}'::jsonb,
            response = CASE WHEN jsonb_typeof(n.response -> 'deliveries') = 'array' THEN jsonb_set(
                n.response, '{deliveries}', (
                    SELECT COALESCE(jsonb_agg(CASE WHEN jsonb_typeof(x.d) = 'object' AND x.d ? 'to'
                                                   THEN jsonb_set(x.d, '{to}', 'null'::jsonb) ELSE x.d END
                                              ORDER BY x.i), '[]'::jsonb)
                    FROM jsonb_array_elements(n.response -> 'deliveries') WITH ORDINALITY AS x(d, i)))
            ELSE n.response END
        WHERE n.recipient_id = %(r)s""",
    "devices": "DELETE FROM notify_device WHERE recipient_id = %(r)s",
    "preferences": "DELETE FROM notify_preference WHERE recipient_id = %(r)s",
    # The row stays (notifications refer to it: their counts are kept) under an id no request
    # can name, paused for good so that nothing reaching a worker later goes out.
    "recipient": """
        UPDATE notify_recipient SET external_id = %(tombstone)s, name = '', email = '', phone = '',
            locale = %(locale)s, timezone = %(timezone)s, quiet_hours = '', muted = true, muted_until = NULL,
            updated_at = now()
        WHERE id = %(r)s""",
}
_SENDING_SQL = """
SELECT count(*) FROM notify_delivery d JOIN notify_notification n ON n.id = d.notification_id
WHERE n.recipient_id = %(r)s AND d.status = 'sending'
"""


def lock_recipient(recipient_id: int) -> tuple[int, str] | None:
    """Lock a recipient's row until the transaction ends; its ``(app_id, external_id)``, or
    None when there is no such recipient. Call inside a transaction."""
    with prepared_cursor() as cursor:
        cursor.execute(_ERASE_LOCK_SQL, {"r": recipient_id})
        return cursor.fetchone()


def erase_recipient_rows(recipient_id: int, tombstone: str, locale: str, timezone: str) -> dict[str, int]:
    """Remove the personal data of recipient ``recipient_id`` from every table, in the caller's
    transaction (see notify.privacy, the one caller): the addresses and device links of its
    deliveries, the provider answers and event data logged for them, its notifications' data,
    content and the ``to`` of their stored 202s; its devices and preferences deleted; the row
    itself renamed ``tombstone`` with its personal fields emptied, ``locale`` and ``timezone``
    (the model's defaults) set, and muted. Delivery statuses are left as they are.

    Returns:
        Rows changed per statement (``deliveries``, ``device_deliveries``, ``answers``,
        ``events``, ``notifications``, ``devices``, ``preferences``, ``recipient``), and ``sending``: the recipient's deliveries
        a worker is sending at this instant.
    """
    params = {"r": recipient_id, "tombstone": tombstone, "locale": locale, "timezone": timezone}
    counts = {}
    with prepared_cursor() as cursor:
        for name, sql in _ERASE_SQL.items():
            cursor.execute(sql, params)
            counts[name] = cursor.rowcount
        cursor.execute(_SENDING_SQL, params)
        counts["sending"] = cursor.fetchone()[0]
    return counts


# -- analytics -----------------------------------------------------------------------------------
#: Why the rollup can trust its watermark although transactions commit out of order: every row it
#: reads is stamped ``now()``, its writing transaction's start. A row not yet committed therefore
#: belongs to a transaction still open, stamped no earlier than that transaction's start, and a
#: transaction not yet begun stamps later than this instant. So everything stamped before the
#: oldest open transaction's start (pg_stat_activity.xact_start, this database's client
#: sessions, this one aside) is committed or never will be. ``lag`` is a floor under that: it
#: covers sessions this role cannot see (another role without pg_read_all_stats) and open no
#: longer than the lag.
_ROLLUP_BOUNDS_SQL = """
SELECT w.upto, now() - make_interval(secs => %(lag)s::float8),
       (SELECT min(a.xact_start) FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend')
FROM notify_analyticswatermark w WHERE w.name = %(name)s
FOR UPDATE OF w
"""
_ROLLUP_WATERMARK_SQL = """
INSERT INTO notify_analyticswatermark (name, upto) VALUES (%(name)s, %(beginning)s) ON CONFLICT (name) DO NOTHING
"""
#: Every row stamped in [lo, hi) becomes a count of its delivery's metric, on the UTC day its
#: notification was accepted (a cohort: an open days later counts with the send it belongs to),
#: added to notify_dailystat with the watermark moved to ``hi`` in the same statement. What is
#: counted from what: notify.models.Metric. A delivery suppressed at accept is the one that
#: never has a log row (every later move writes one in the statement that makes it).
_ROLLUP_SQL = """
WITH new_rows AS (
    SELECT l.delivery_id,
           CASE WHEN l.to_status = 'sent' THEN 'sent'
                WHEN l.to_status IN ('failed', 'dead_lettered', 'expired') THEN 'failed'
                WHEN l.to_status = 'suppressed' THEN 'suppressed'
                WHEN l.to_status = 'cancelled' THEN 'cancelled'
                ELSE 'replayed' END AS metric
    FROM notify_deliverylog l
    WHERE l.at >= %(lo)s AND l.at < %(hi)s
      AND (l.to_status IN ('sent', 'failed', 'dead_lettered', 'expired', 'suppressed', 'cancelled')
           OR (l.from_status = 'dead_lettered' AND l.to_status = 'queued'))
    UNION ALL
    SELECT e.delivery_id, e.kind FROM notify_deliveryevent e
    WHERE e.received_at >= %(lo)s AND e.received_at < %(hi)s AND e.kind = ANY(%(event_metrics)s::varchar[])
    UNION ALL
    SELECT d.id, CASE WHEN d.status = 'suppressed'
                           AND NOT EXISTS (SELECT 1 FROM notify_deliverylog x WHERE x.delivery_id = d.id)
                      THEN 'suppressed' ELSE 'accepted' END
    FROM notify_notification n JOIN notify_delivery d ON d.notification_id = n.id
    WHERE n.created_at >= %(lo)s AND n.created_at < %(hi)s
), counted AS (
    SELECT n.app_id, (n.created_at AT TIME ZONE 'UTC')::date AS day, COALESCE(n.template_id, 0) AS template_id,
           COALESCE(n.template_version, 0) AS template_version, d.variant, d.channel, r.metric, count(*) AS count
    FROM new_rows r JOIN notify_delivery d ON d.id = r.delivery_id JOIN notify_notification n ON n.id = d.notification_id
    GROUP BY 1, 2, 3, 4, 5, 6, 7
), upserted AS (
    INSERT INTO notify_dailystat (app_id, day, template_id, template_version, variant, channel, metric, count)
    SELECT app_id, day, template_id, template_version, variant, channel, metric, count FROM counted
    ON CONFLICT (app_id, day, template_id, template_version, variant, channel, metric)
    DO UPDATE SET count = notify_dailystat.count + EXCLUDED.count
    RETURNING 1
), moved AS (
    UPDATE notify_analyticswatermark SET upto = %(hi)s, rolled_at = now() WHERE name = %(name)s RETURNING 1
)
SELECT (SELECT count(*) FROM new_rows), (SELECT count(*) FROM upserted), (SELECT count(*) FROM moved)
"""


@dataclasses.dataclass(frozen=True)
class Rollup:
    """What one :func:`rollup_analytics` did.

    Attributes:
        since, upto: the window counted, [since, upto) (aware instants); equal when nothing
            could be counted yet.
        rows: log rows, events and deliveries counted.
        counts: notify_dailystat rows added to or created.
        held_since: the start of the oldest transaction still open, when it held the window
            back to before ``now - lag`` (a long transaction delays the analytics, never
            miscounts them); else None.
    """

    since: datetime.datetime
    upto: datetime.datetime
    rows: int
    counts: int
    held_since: datetime.datetime | None


def rollup_analytics(name: str, lag: float, event_metrics: Sequence[str],
                     beginning: datetime.datetime) -> Rollup:
    """Count into notify_dailystat what was recorded since the watermark ``name`` (created at
    ``beginning`` the first time) and move it, in one transaction: exactly once, whatever
    order transactions commit in (:data:`_ROLLUP_BOUNDS_SQL`). Concurrent calls take turns on
    the watermark's row lock; the second counts only what the first left.

    Args:
        lag: seconds; only rows stamped at least this long ago are counted (0 in tests).
        event_metrics: the delivery-event kinds counted (notify.models.EVENT_METRICS).
    """
    with transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute(_ROLLUP_WATERMARK_SQL, {"name": name, "beginning": beginning})
        cursor.execute(_ROLLUP_BOUNDS_SQL, {"name": name, "lag": lag})
        lo, floor, oldest = cursor.fetchone()
        hi = floor if oldest is None else min(floor, oldest)
        held = oldest if oldest is not None and oldest < floor else None
        if hi <= lo:
            return Rollup(lo, lo, 0, 0, held)
        cursor.execute(_ROLLUP_SQL, {"name": name, "lo": lo, "hi": hi, "event_metrics": list(event_metrics)})
        rows, counts, _ = cursor.fetchone()
    return Rollup(lo, hi, rows, counts, held)


#: A group's SQL expression by its API name (notify.analytics.GROUPS).
_ANALYTICS_GROUP_SQL = {"day": "s.day", "template": "s.template_id", "version": "s.template_version",
                        "variant": "s.variant", "channel": "s.channel"}
_ANALYTICS_SQL = """
SELECT {columns} s.metric, sum(s.count)::bigint
FROM notify_dailystat s
WHERE s.app_id = %(app)s::bigint AND s.day >= %(first)s::date AND s.day <= %(last)s::date
  AND (%(template)s::bigint IS NULL OR s.template_id = %(template)s::bigint)
  AND (%(version)s::int IS NULL OR s.template_version = %(version)s::int)
  AND (%(variant)s::varchar IS NULL OR s.variant = %(variant)s::varchar)
  AND (%(channel)s::varchar IS NULL OR s.channel = %(channel)s::varchar)
GROUP BY {columns} s.metric
"""


def analytics_counts(app_id: int, first_day: datetime.date, last_day: datetime.date, group_by: Sequence[str], *,
                     template_id: int | None = None, version: int | None = None, variant: str | None = None,
                     channel: str | None = None) -> list[tuple]:
    """The summed counts of app ``app_id`` on the days [first_day, last_day] (the notifications'
    UTC accept days), optionally of one template id (0: sends without one), version, variant
    (``""``: none) and channel, one row per group and metric: ``(*group values, metric,
    count)``, the groups in ``group_by``'s order (names of :data:`_ANALYTICS_GROUP_SQL`; a
    template as its id, 0 for none; a version 0 for none). Reads notify_dailystat only, by its
    key's (app, day) prefix.

    Raises:
        KeyError: an unknown group name.
    """
    columns = "".join(f"{_ANALYTICS_GROUP_SQL[group]}, " for group in group_by)
    params = {"app": app_id, "first": first_day, "last": last_day, "template": template_id, "version": version,
              "variant": variant, "channel": channel}
    with prepared_cursor() as cursor:
        cursor.execute(_ANALYTICS_SQL.format(columns=columns), params)
        return cursor.fetchall()


# -- broadcasts ----------------------------------------------------------------------------------
#: The segment filter of a broadcast (notify.broadcast): a null parameter drops its condition.
#: ``locale`` matches the tag and its sub-tags (``ko`` takes ``ko-KR``); ``tags_any`` overlaps,
#: ``tags_all`` contains (both served by the ``recipient_tags`` GIN index).
_SEGMENT_SQL = """
r.app_id = %(app)s
AND (%(locale)s::text IS NULL OR lower(r.locale) = %(locale)s OR lower(r.locale) LIKE %(locale)s || '-%%')
AND (%(tags_any)s::varchar[] IS NULL OR r.tags && %(tags_any)s::varchar[])
AND (%(tags_all)s::varchar[] IS NULL OR r.tags @> %(tags_all)s::varchar[])
AND (%(ids)s::varchar[] IS NULL OR r.external_id = ANY(%(ids)s::varchar[]))
"""


def _segment_params(app_id: int, segment: dict) -> dict:
    tags = segment.get("tags") or None
    match_all = segment.get("tags_match") == "all"
    return {"app": app_id, "locale": (segment.get("locale") or "").lower() or None,
            "tags_any": None if match_all else tags, "tags_all": tags if match_all else None,
            "ids": segment.get("external_ids") or None}


def segment_locales(app_id: int, segment: dict) -> dict[str, int]:
    """The recipients of an app's ``segment`` (notify.broadcast's shape) counted per their
    ``locale`` (as stored): ``{locale: count}``, empty when the segment has none."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT r.locale, count(*) FROM notify_recipient r WHERE {_SEGMENT_SQL} GROUP BY 1",
                       _segment_params(app_id, segment))
        return dict(cursor.fetchall())


# Every batch of a broadcast takes its batch lock first (held to commit), so two tasks of one
# broadcast (a task run twice, or restarted by the dispatcher while the first still runs) write
# their batches one after the other, whichever way each writes them.
_BATCH_LOCK_SQL = "SELECT pg_advisory_xact_lock(1852793449, (%(b)s::bigint %% 2147483647)::int)"
_BROADCAST_LOCK_SQL = "SELECT status, cursor FROM notify_broadcast WHERE id = %(b)s FOR UPDATE"
# The variant is notify.rendering.assign_variant's, in SQL: the first 64 bits of
# sha256(experiment NUL app:external_id), scaled exactly into [0, total weight).
_VARIANT_SQL = """
COALESCE((SELECT v.name FROM unnest(%(v_name)s::varchar[], %(v_upto)s::numeric[]) AS v(name, upto)
          WHERE v.upto > floor(((('x' || encode(substr(sha256(convert_to(%(experiment)s, 'UTF8') || '\\x00'::bytea
                || convert_to(%(app)s::text || ':' || r.external_id, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint::numeric
                + 18446744073709551616) %% 18446744073709551616 * %(v_total)s / 18446744073709551616))
          ORDER BY v.upto LIMIT 1), '')
"""
# A fan-out row's id: a UUIDv7 (RFC 9562: 48 bits of Unix milliseconds, version 7, then 74 of
# gen_random_uuid's random bits with its variant). Rows written in id order land on the right
# edge of the primary keys and of notify_delivery's notification_id index instead of on random
# pages: 8-17% less time per batch than gen_random_uuid() on 100,000 recipients (shared 2-core
# machine), and more on tables larger than the buffer cache. Ids are no secret (tracking links
# are signed).
_ORDERED_UUID_SQL = ("(lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7' "
                     "|| substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid")


def _fan_out_sql(picked_range: str, tail: str) -> str:
    """The fan-out of the recipients ``picked_range`` selects (SQL after the segment's filter, on
    ``notify_recipient r``): CTE ``picked`` (the recipients, their template locale, variant and
    rendered content), ``n`` (their notifications, idempotency key ``broadcast:<id>:<recipient
    id>``, ON CONFLICT DO NOTHING, so a recipient already written is skipped with its
    deliveries), ``d`` (one delivery per channel address, the queued ones marked published)
    and ``outbox`` (their batch rows, notify.models.OutboxBatch); ``tail`` adds CTEs and the
    final SELECT."""
    return f"""
WITH picked AS (
    -- The subquery is not flattened (OFFSET 0): the variant is computed once per recipient.
    SELECT s.*, %(parts)s::jsonb -> (s.variant || '|' || s.tlocale) AS content FROM (
        SELECT r.id, r.email, r.phone, r.muted AND (r.muted_until IS NULL OR r.muted_until > now()) AS muted,
               COALESCE(%(locales)s::jsonb ->> r.locale, %(default_locale)s) AS tlocale, {_VARIANT_SQL} AS variant
        FROM notify_recipient r
        WHERE {_SEGMENT_SQL} {picked_range} OFFSET 0
    ) s
), n AS (
    INSERT INTO notify_notification (id, app_id, api_key_id, recipient_id, idempotency_key, request_hash, category,
        template_id, template_version, locale, data, content, priority, ttl, expires_at, response, send_at,
        fallback, created_at, broadcast_id)
    SELECT {_ORDERED_UUID_SQL}, %(app)s, NULL, p.id, 'broadcast:' || %(b)s::text || ':' || p.id::text, '',
           %(category)s, %(template)s, %(version)s, p.tlocale, %(data)s::jsonb, COALESCE(p.content, '{{}}'::jsonb),
           %(priority)s, %(ttl)s, now() + make_interval(secs => %(ttl)s),
           jsonb_build_object('broadcast', %(b)s::bigint), NULL, '[]'::jsonb, now(), %(b)s
    FROM picked p
    ON CONFLICT (app_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, recipient_id
), d AS (
    INSERT INTO notify_delivery (id, notification_id, channel, provider, variant, step, device_id, address, status,
        reason, attempts, provider_message_id, created_at, updated_at, next_attempt_at, unknown_outcome, published_at)
    SELECT {_ORDERED_UUID_SQL}, n.id, c.channel, '', p.variant, 0, dv.id,
           CASE c.kind WHEN 'phone' THEN p.phone WHEN 'email' THEN p.email ELSE dv.token END,
           CASE WHEN refusal.reason IS NULL THEN 'queued' ELSE 'suppressed' END, COALESCE(refusal.reason, ''),
           0, '', now(), now(), now(), false,
           -- Handed to the relay now, through the batch rows below, not one by one.
           CASE WHEN refusal.reason IS NULL THEN now() END
    FROM n JOIN picked p ON p.id = n.recipient_id
    CROSS JOIN unnest(%(c_channel)s::varchar[], %(c_kind)s::varchar[], %(c_platform)s::varchar[], %(c_group)s::varchar[])
         AS c(channel, kind, platform, grp)
    -- Looked up for the device channels only (a one-time filter on c.kind; as a plain join
    -- condition it was checked after an index scan for every channel).
    LEFT JOIN LATERAL (SELECT dv.id, dv.token FROM notify_device dv
                       WHERE c.kind = 'device' AND dv.recipient_id = p.id AND dv.active AND dv.platform = c.platform
                       OFFSET 0) dv ON true
    -- What is known now and cheap: an explicit opt-out (the category's row over the channel-wide
    -- one) and a global mute; everything else is decided at send (notify.policy.at_send). The
    -- preference is looked up once per delivery (a LIMIT keeps the lateral join unflattened).
    LEFT JOIN LATERAL (SELECT pf.enabled FROM notify_preference pf
                       WHERE NOT %(required)s AND pf.recipient_id = p.id AND pf.channel = c.channel
                         AND pf.category IN (%(category)s, '') ORDER BY pf.category DESC LIMIT 1) pref ON true
    CROSS JOIN LATERAL (SELECT CASE
        WHEN %(required)s THEN NULL
        WHEN pref.enabled IS FALSE THEN 'opted_out'
        WHEN p.muted THEN 'muted'
    END AS reason) refusal
    WHERE p.content ? c.grp
      AND CASE c.kind WHEN 'phone' THEN p.phone <> '' WHEN 'email' THEN p.email <> '' ELSE dv.id IS NOT NULL END
    RETURNING id, channel, status
), outbox AS (
    -- The queued deliveries wait for the relay as one row per channel (notify.outbox).
    INSERT INTO notify_outboxbatch (channel, delivery_ids, created_at, broadcast_id)
    SELECT channel, array_agg(id ORDER BY id), now(), %(b)s FROM d WHERE status = 'queued' GROUP BY channel
){tail}"""


_COUNTS = """(SELECT count(*) FROM n) AS written, (SELECT count(*) FROM d WHERE status = 'queued') AS queued,
       (SELECT count(*) FROM d WHERE status = 'suppressed') AS suppressed"""
_WAKE = "(SELECT count(*) FROM (SELECT pg_notify(%(event)s::text, '') FROM d WHERE status = 'queued' LIMIT 1) w)"
# One transaction for a whole batch, the broadcast's row locked first (_BROADCAST_LOCK_SQL).
_BROADCAST_BATCH_SQL = _fan_out_sql("AND r.id > %(cursor)s ORDER BY r.id LIMIT %(limit)s", f""", advanced AS (
    UPDATE notify_broadcast SET
        cursor = COALESCE((SELECT max(id) FROM picked), cursor),
        written = written + (SELECT count(*) FROM n),
        queued = queued + (SELECT count(*) FROM d WHERE status = 'queued'),
        suppressed_at_fanout = suppressed_at_fanout + (SELECT count(*) FROM d WHERE status = 'suppressed'),
        status = CASE WHEN (SELECT count(*) FROM picked) < %(limit)s THEN 'done' ELSE status END,
        finished_at = CASE WHEN (SELECT count(*) FROM picked) < %(limit)s THEN now() END,
        progressed_at = now(), updated_at = now()
    WHERE id = %(b)s
    RETURNING status
)
SELECT (SELECT count(*) FROM picked), (SELECT status FROM advanced), {_WAKE}
""")
# A batch in lanes (fan_out_lanes): the batch lock, then where the next batch's lanes end, and
# the status and cursor read without the row's lock (each lane re-checks the status under it).
_BROADCAST_LANES_SQL = f"""
SELECT b.status, b.cursor, ids.taken, ids.bounds FROM notify_broadcast b
CROSS JOIN LATERAL (
    SELECT count(*) AS taken, percentile_disc(%(fractions)s::float8[]) WITHIN GROUP (ORDER BY picked.id) AS bounds
    FROM (SELECT r.id FROM notify_recipient r WHERE {_SEGMENT_SQL} AND r.id > b.cursor
          ORDER BY r.id LIMIT %(limit)s) picked
) ids
WHERE b.id = %(b)s
"""
# An upper lane: its rows and its counters in its own transaction, the row's lock taken at the
# very end (so lanes overlap); no row back when the broadcast is no longer running (cancelled).
_BROADCAST_LANE_SQL = _fan_out_sql("AND r.id > %(cursor)s AND r.id <= %(upto)s", f""", counted AS (
    UPDATE notify_broadcast SET
        written = written + (SELECT count(*) FROM n),
        queued = queued + (SELECT count(*) FROM d WHERE status = 'queued'),
        suppressed_at_fanout = suppressed_at_fanout + (SELECT count(*) FROM d WHERE status = 'suppressed'),
        progressed_at = now(), updated_at = now()
    WHERE id = %(b)s AND status = 'running'
    RETURNING status
)
SELECT (SELECT count(*) FROM picked), (SELECT status FROM counted), {_WAKE}
""")
# The first lane: its rows, counted but the broadcast's row untouched until the upper lanes have
# committed (_BROADCAST_CLOSE_SQL), so no lane waits for a lock another one holds.
_BROADCAST_FIRST_LANE_SQL = _fan_out_sql("AND r.id > %(cursor)s AND r.id <= %(upto)s",
                                         f"\nSELECT {_COUNTS}, {_WAKE}\n")
# The first lane's counters, and the cursor moved over the whole batch, once every upper lane
# has committed; only from where the batch started (a concurrent task's cursor is left alone).
_BROADCAST_CLOSE_SQL = """
UPDATE notify_broadcast SET
    written = written + %(written)s, queued = queued + %(queued)s,
    suppressed_at_fanout = suppressed_at_fanout + %(suppressed)s,
    cursor = CASE WHEN cursor = %(cursor)s THEN %(upto)s ELSE cursor END,
    status = CASE WHEN cursor = %(cursor)s AND %(last)s THEN 'done' ELSE status END,
    finished_at = CASE WHEN cursor = %(cursor)s AND %(last)s THEN now() ELSE finished_at END,
    progressed_at = now(), updated_at = now()
WHERE id = %(b)s AND status = 'running'
RETURNING status
"""


def _fan_out_params(broadcast: Any, channels: Sequence[tuple[str, str, str, str]], required: bool) -> dict:
    """The parameters every fan-out statement shares: segment, content, channels, rules."""
    content = broadcast.content
    variants = content.get("variants") or []
    upto, total = [], 0
    for variant in variants:
        total += int(variant["weight"])
        upto.append(total)
    return {**_segment_params(broadcast.app_id, broadcast.segment), "b": broadcast.id,
            "event": OUTBOX_EVENT, "locales": Jsonb(content.get("locales") or {}),
            "default_locale": content.get("default_locale") or "", "parts": Jsonb(content.get("parts") or {}),
            "experiment": content.get("experiment") or "", "v_name": [v["name"] for v in variants],
            "v_upto": upto, "v_total": total, "category": broadcast.category,
            "template": broadcast.template_id, "version": broadcast.template_version,
            "data": Jsonb(broadcast.data), "priority": broadcast.priority, "ttl": broadcast.ttl,
            "required": required,
            "c_channel": [c[0] for c in channels], "c_kind": [c[1] for c in channels],
            "c_platform": [c[2] for c in channels], "c_group": [c[3] for c in channels]}


def _fast_commit(cursor) -> None:
    # A fan-out transaction's commit does not wait for its WAL to reach disk. A crash can lose
    # the last such commits, but each loses its rows together with its cursor move and counters
    # (one WAL record stream), and the next task writes those recipients again; anything that
    # acted on the rows (the relay deleting their outbox batch rows, a worker's claim) commits
    # synchronously later in the WAL, which makes the batch durable first. Nothing acknowledged
    # depends on it: the broadcast itself was committed durably by the API's call.
    cursor.execute("SET LOCAL synchronous_commit = off")


def fan_out_batch(broadcast: Any, channels: Sequence[tuple[str, str, str, str]], required: bool,
                  limit: int) -> tuple[int, str]:
    """Fan out the next ``limit`` recipients of ``broadcast`` (a notify.models.Broadcast) after its
    cursor, in the caller's transaction: take the broadcast's batch lock and lock its row, write
    one notification per recipient (idempotency key ``broadcast:<id>:<recipient id>``, ON
    CONFLICT DO NOTHING) and a delivery per channel address (``queued``, or ``suppressed`` for
    an explicit opt-out or a mute unless ``required``), advance the cursor and counters, and
    wake the relay at commit.

    Args:
        channels: ``(channel, kind, platform, content group)``, kind ``phone``/``email``/``device``.
    Returns:
        ``(recipients taken, status after)``; ``(0, status)`` without fanning out when the
        broadcast is not ``running`` (cancelled, done).
    """
    with connection.cursor() as cursor:
        cursor.execute(_BATCH_LOCK_SQL, {"b": broadcast.id})
        cursor.execute(_BROADCAST_LOCK_SQL, {"b": broadcast.id})
        status, position = cursor.fetchone()
        if status != "running":
            return 0, status
        _fast_commit(cursor)
        cursor.execute(_BROADCAST_BATCH_SQL, {**_fan_out_params(broadcast, channels, required),
                                              "cursor": position, "limit": limit})
        taken, after, _ = cursor.fetchone()
    return taken, after


def fan_out_lanes(broadcast_id: int, limit: int, lanes: int, app_id: int,
                  segment: dict) -> tuple[str, int, int, list[int]]:
    """In the caller's transaction: take the broadcast's batch lock, and read where the next
    batch of ``limit`` recipients after the cursor splits into ``lanes`` equal id ranges:
    ``(status, cursor, recipients in the batch, [last id of each lane])`` (no lanes when the
    broadcast is unknown or the batch empty). The broadcast's row itself is not locked."""
    fractions = [(lane + 1) / lanes for lane in range(lanes)]
    with connection.cursor() as cursor:
        cursor.execute(_BATCH_LOCK_SQL, {"b": broadcast_id})
        cursor.execute(_BROADCAST_LANES_SQL, {**_segment_params(app_id, segment), "b": broadcast_id,
                                              "limit": limit, "fractions": fractions})
        row = cursor.fetchone()
    if row is None:
        return "", 0, 0, []
    status, position, taken, bounds = row
    return status, position, taken, list(dict.fromkeys(bounds or []))


def fan_out_lane(broadcast: Any, channels: Sequence[tuple[str, str, str, str]], required: bool,
                 after: int, upto: int, first: bool) -> tuple[int, int, int] | None:
    """Write the recipients of ``broadcast`` with ids in ``(after, upto]`` in the caller's
    transaction (one lane of a batch, notify.broadcast.fan_out): notifications and deliveries
    as :func:`fan_out_batch` writes them, and the relay woken at commit. An upper lane
    (``first`` false) adds its counts to the broadcast's counters at the end of its statement
    and returns None when the broadcast is no longer ``running`` (roll back then). The first
    lane leaves the broadcast's row alone (:func:`close_lanes` does it) and returns its counts
    ``(notifications written, deliveries queued, deliveries suppressed)``."""
    params = {**_fan_out_params(broadcast, channels, required), "cursor": after, "upto": upto}
    with connection.cursor() as cursor:
        _fast_commit(cursor)
        if first:
            # Its foreign keys checked at the end of its statement, not at commit: while the
            # upper lanes still run, rather than after the wait for them.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(_BROADCAST_FIRST_LANE_SQL, params)
            written, queued, suppressed, _ = cursor.fetchone()
            return written, queued, suppressed
        cursor.execute(_BROADCAST_LANE_SQL, params)
        _, status, _ = cursor.fetchone()
    return (0, 0, 0) if status == "running" else None


def close_lanes(broadcast_id: int, counts: tuple[int, int, int], after: int, upto: int, last: bool) -> str | None:
    """In the first lane's transaction, once every upper lane of the batch has committed: add
    the first lane's ``counts`` to the counters and move the cursor from ``after`` to ``upto``
    (``done`` when ``last``). Returns the status after, None when the broadcast is no longer
    ``running`` (roll back then)."""
    written, queued, suppressed = counts
    with connection.cursor() as cursor:
        cursor.execute(_BROADCAST_CLOSE_SQL, {"b": broadcast_id, "written": written, "queued": queued,
                                              "suppressed": suppressed, "cursor": after, "upto": upto,
                                              "last": last})
        row = cursor.fetchone()
    return row[0] if row else None


_BROADCAST_PROGRESS_SQL = """
SELECT d.status, count(*) FROM notify_delivery d JOIN notify_notification n ON n.id = d.notification_id
WHERE n.broadcast_id = %(b)s GROUP BY d.status
"""


def broadcast_statuses(broadcast_id: int) -> dict[str, int]:
    """How many deliveries of a broadcast stand in each status: ``{status: count}``."""
    with connection.cursor() as cursor:
        cursor.execute(_BROADCAST_PROGRESS_SQL, {"b": broadcast_id})
        return dict(cursor.fetchall())


#: The broadcast's own row first, in a statement of its own: it waits for a fan-out batch holding
#: the row, and the deliveries are then read by the next statement, whose snapshot includes that
#: batch's rows (one statement would read them with a snapshot taken before its wait).
_CANCEL_BROADCAST_ROW_SQL = """
WITH before AS (
    SELECT id, status FROM notify_broadcast
    WHERE id = %(b)s AND app_id = %(app)s AND status IN ('created', 'running', 'done') FOR UPDATE
)
UPDATE notify_broadcast b SET status = 'cancelled', cancelled_at = now(), updated_at = now(),
    finished_at = COALESCE(b.finished_at, now())
FROM before WHERE b.id = before.id
RETURNING before.status
"""

_CANCEL_BROADCAST_SQL = f"""
WITH chosen AS (
    SELECT d.id, d.created_at, d.status AS old_status FROM notify_delivery d JOIN notify_notification n ON n.id = d.notification_id
    WHERE n.broadcast_id = %(b)s AND d.status = ANY(%(cancellable)s::varchar[])
    FOR UPDATE OF d SKIP LOCKED
), cancelled AS (
    UPDATE notify_delivery d SET status = 'cancelled', reason = 'cancelled', updated_at = now(), lease_until = NULL
    FROM chosen WHERE d.id = chosen.id AND d.created_at = chosen.created_at
    RETURNING d.id, d.attempts, d.notification_id, chosen.old_status
), marked AS (
    UPDATE notify_notification SET cancelled_at = now() WHERE id IN (SELECT notification_id FROM cancelled)
    RETURNING 1
), logged AS (
    {_log_rows('''(SELECT id AS delivery_id, old_status AS from_status, 'cancelled' AS to_status,
                          attempts AS attempt, 'cancelled' AS reason, NULL::int AS provider_status,
                          NULL::jsonb AS provider_answer, NULL::float8 AS duration_ms FROM cancelled) c''')}
), unbatched AS (
    -- Its batch rows the relay has not taken: nothing of them is left to publish. A row a relay
    -- round holds is skipped rather than waited for; its deliveries are cancelled above, and
    -- the worker's claim skips a cancelled delivery.
    DELETE FROM notify_outboxbatch WHERE id = ANY(ARRAY(
        SELECT id FROM notify_outboxbatch WHERE broadcast_id = %(b)s FOR UPDATE SKIP LOCKED))
)
SELECT (SELECT count(*) FROM cancelled), (SELECT count(*) FROM marked)
"""


def cancel_broadcast(app_id: int, broadcast_id: int) -> int | None:
    """Cancel broadcast ``broadcast_id`` of app ``app_id`` if ``created``, ``running``, or
    ``done`` (its fan-out finished) with deliveries still to cancel: its status → ``cancelled``
    (a fan-out batch waiting on its row then writes nothing; ``finished_at`` set if unset),
    every delivery it wrote in :data:`CANCELLABLE` → ``cancelled`` (logged), as :func:`cancel`
    does for one notification, and its outbox batch rows no relay round holds deleted.

    Returns:
        How many deliveries it cancelled, or None when it was not cancellable (unknown,
        cancelled already, or done with nothing left to cancel: then nothing changes).
    """
    params = {"b": broadcast_id, "app": app_id, "cancellable": list(CANCELLABLE)}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CANCEL_BROADCAST_ROW_SQL, params)
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(_CANCEL_BROADCAST_SQL, params)
        cancelled, _ = cursor.fetchone()
        if row[0] == "done" and not cancelled:
            # Everything was sent or final already: a done broadcast stays done.
            transaction.set_rollback(True)
            return None
    return cancelled


_STALLED_BROADCASTS_SQL = """
UPDATE notify_broadcast SET progressed_at = now()
WHERE id IN (SELECT id FROM notify_broadcast WHERE status = 'running'
             AND COALESCE(progressed_at, created_at) < now() - make_interval(secs => %(after)s)
             FOR UPDATE SKIP LOCKED)
RETURNING id
"""


def stalled_broadcasts(after: float) -> list[int]:
    """Ids of ``running`` broadcasts with no batch committed for ``after`` seconds (their fan-out
    task was lost), their clock reset so the next call does not take them again at once."""
    with connection.cursor() as cursor:
        cursor.execute(_STALLED_BROADCASTS_SQL, {"after": after})
        return [row[0] for row in cursor.fetchall()]

"""Time-ordered ids for notifications and deliveries, and the time span a set of them covers.

Ids are UUIDv7 (RFC 9562 §5.7: 48 bits of Unix milliseconds, version 7, then random bits),
made by the ``uuid6`` package. Two things follow from the time in front:
- rows are written at the right edge of the primary keys instead of on random pages;
- an id tells within a margin when its row was written, so a look-up by id can name the day
  partitions of ``notify_delivery`` it may be in (notify.partitions) instead of probing every one
  (notify.store.claim_batch). Ids of an older installation (UUIDv4) tell nothing: a set holding
  one is looked up everywhere.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Iterable

import uuid6

#: How far a row's ``created_at`` (the database's clock at insert) may be from the time in its id
#: (the accepting process's clock, just before): the insert's own wait plus the clocks' skew.
#: A row outside it is still found, by a second, unbounded look-up (notify.store.claim_batch).
SPAN_MARGIN = dt.timedelta(hours=1)


def new_id() -> uuid.UUID:
    """A new UUIDv7 (a plain :class:`uuid.UUID`, as the database driver expects)."""
    return uuid.UUID(int=uuid6.uuid7().int)


def written_at(value: uuid.UUID | str) -> dt.datetime | None:
    """The UTC time in a UUIDv7, to the millisecond; None for any other version."""
    value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    if value.version != 7:
        return None
    return dt.datetime.fromtimestamp((value.int >> 80) / 1000, tz=dt.timezone.utc)


def span(ids: Iterable[uuid.UUID | str]) -> tuple[dt.datetime, dt.datetime] | None:
    """``(earliest, latest)`` creation times the rows of ``ids`` may have (their ids' times
    widened by :data:`SPAN_MARGIN`), or None when an id is not a UUIDv7 (or there is none)."""
    times = []
    for value in ids:
        at = written_at(value)
        if at is None:
            return None
        times.append(at)
    if not times:
        return None
    return min(times) - SPAN_MARGIN, max(times) + SPAN_MARGIN

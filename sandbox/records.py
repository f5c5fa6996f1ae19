"""The record of every request the provider ports receive (contract: sandbox/README.md).

One :class:`RecordStore` per sandbox keeps records in memory (for ``GET /records`` and
``GET /inbox``) and appends each as one JSON line to ``<dir>/records/<provider>.jsonl``. Lines
go through a buffered file and are flushed by :meth:`RecordStore.flush` (the server calls it every
200 ms and on shutdown), so recording costs one ``json.dumps`` and a buffered write per request.
The store is thread-safe: SMTP runs on aiosmtpd's own thread.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

PROVIDERS = ("apns", "fcm", "webpush", "twilio", "ses", "smtp")


def _default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


class RecordStore:
    """Records, in arrival order, with a global sequence number.

    Record shape (a ``dict``)::

        {"seq": int, "provider": str, "time": float (epoch s), "method": str, "path": str,
         "http_version": "2" | "1.1" | None, "headers": {lower-case name: value},
         "body": parsed JSON / form dict / str / None, "status": int (HTTP status; SMTP reply code),
         "response": dict | None, "accepted": bool, "reason": str | None,
         "delivery_id": str | None, "to": str | None, "extra": {...}}

    ``accepted`` means the provider took the message (it will reach the device / phone /
    mailbox); with an ``after_accept`` fault a record is accepted although ``status`` is an error.
    """

    def __init__(self, directory: Path, max_records: int = 500_000) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._records: list[dict] = []
        self._seqs: list[int] = []
        self._seq = 0
        self._max = max_records
        self._files: dict[str, Any] = {}
        self._dirty = False
        self._listeners: list[Callable[[dict], None]] = []

    def add_listener(self, fn: Callable[[dict], None]) -> None:
        """Call ``fn(record)`` after each record is added (under no lock; must be cheap)."""
        self._listeners.append(fn)

    def _file(self, provider: str):
        fh = self._files.get(provider)
        if fh is None:
            fh = open(self._dir / f"{provider}.jsonl", "a", encoding="utf-8", buffering=1 << 16)
            self._files[provider] = fh
        return fh

    def add(self, record: dict) -> dict:
        """Assign ``seq`` and ``time`` (if missing), keep and append the record; return it."""
        with self._lock:
            self._seq += 1
            record["seq"] = self._seq
            record.setdefault("time", time.time())
            self._records.append(record)
            self._seqs.append(self._seq)
            if len(self._records) > self._max:
                drop = len(self._records) - self._max
                del self._records[:drop]
                del self._seqs[:drop]
            line = json.dumps(record, default=_default, ensure_ascii=False)
            self._file(record["provider"]).write(line + "\n")
            self._dirty = True
        for fn in self._listeners:
            fn(record)
        return record

    def query(
        self,
        provider: str | None = None,
        since: int | None = None,
        accepted: bool | None = None,
        to: str | None = None,
        delivery_id: str | None = None,
    ) -> tuple[list[dict], int]:
        """Records matching every given filter, oldest first, and the latest ``seq`` overall.

        ``since`` is exclusive: records with ``seq > since``.
        """
        with self._lock:
            start = 0 if since is None else bisect.bisect_right(self._seqs, since)
            items = self._records[start:]
            last = self._seq
        out = [
            r for r in items
            if (provider is None or r["provider"] == provider)
            and (accepted is None or bool(r["accepted"]) == accepted)
            and (to is None or r.get("to") == to)
            and (delivery_id is None or r.get("delivery_id") == delivery_id)
        ]
        return out, last

    def all(self) -> Iterable[dict]:
        """Snapshot of every kept record."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget the in-memory records (``seq`` keeps counting; JSONL files keep history)."""
        with self._lock:
            self._records.clear()
            self._seqs.clear()

    def flush(self) -> None:
        """Flush buffered JSON lines to disk."""
        with self._lock:
            if not self._dirty:
                return
            for fh in self._files.values():
                fh.flush()
            self._dirty = False

    def close(self) -> None:
        """Flush and close the JSONL files."""
        with self._lock:
            for fh in self._files.values():
                fh.close()
            self._files.clear()

"""Cache of JWT signature checks, keyed by the exact token string.

Clients reuse one provider token for many requests (APNs: 20-60 min; VAPID: per push service
origin), so each distinct token is verified once. Time-dependent checks (``iat`` age, ``exp``)
stay with the caller and run on every request against the cached claims.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable


class JwtCache:
    """``get(token)`` returns ``verify(token)``'s result, computing it once per token string.

    ``verify`` returns any value (e.g. ``(header, claims)``) or raises; a raised exception is
    cached too and re-raised for the same token. At most ``max_entries`` tokens are kept (LRU).
    """

    def __init__(self, verify: Callable[[str], Any], max_entries: int = 4096) -> None:
        self._verify = verify
        self._max = max_entries
        self._items: OrderedDict[str, tuple[bool, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Any:
        with self._lock:
            hit = self._items.get(token)
            if hit is not None:
                self._items.move_to_end(token)
        if hit is None:
            try:
                hit = (True, self._verify(token))
            except Exception as exc:  # cached as a failure for this exact token
                hit = (False, exc)
            with self._lock:
                self._items[token] = hit
                if len(self._items) > self._max:
                    self._items.popitem(last=False)
        ok, value = hit
        if not ok:
            raise value
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

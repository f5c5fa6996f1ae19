"""APNs provider tokens seen per key, and Apple's one-token-per-key rule (strict mode).

Apple: "Refresh your token no more than once every 20 minutes and no less than once every 60
minutes"; a provider that changes a key's token more often gets 429
``TooManyProviderTokenUpdates``. Apple does not document how it counts; the sandbox counts a
*change* each time a request of a key carries another token than the key's current one (a new
token, or an earlier one coming back: several processes signing their own tokens alternate).

Always recorded, per key id: every distinct token (with its ``iat``, when it was first and last
seen, how many requests carried it), the current token and the number of changes. In strict mode
(off by default, switched by the control API) a change within ``min_interval`` seconds (1200) of
the current token's adoption (its ``iat``, or when first seen if earlier) is refused with 429
``TooManyProviderTokenUpdates`` and the current token stays; a token Apple answered ``ExpiredProviderToken`` for (also through a fault rule)
stays expired and no longer counts as current, so its replacement is adopted at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

#: Apple's shortest interval between two tokens of one key (seconds).
MIN_INTERVAL = 20 * 60


@dataclass
class _Seen:
    iat: Any
    first_seen: float
    last_seen: float
    requests: int = 0
    refused: int = 0


@dataclass
class _Key:
    tokens: dict[str, _Seen] = field(default_factory=dict)
    current: str | None = None
    current_since: float = 0.0
    last: str | None = None  # the token of the key's previous request
    changes: int = 0
    refused_updates: int = 0
    expired: set[str] = field(default_factory=set)


def _since(seen: _Seen) -> float:
    """When a token came into use: its ``iat``, or when first seen if that is earlier (a
    sandbox started after the provider signed it has not seen it for as long as it exists)."""
    try:
        return min(seen.first_seen, float(seen.iat))
    except (TypeError, ValueError):
        return seen.first_seen


class ProviderTokens:
    """Thread-safe tracker; ``observe`` is called once per authenticated APNs request."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()
        self.strict = False
        self.min_interval: float = MIN_INTERVAL

    def set_policy(self, strict: bool, min_interval: float = MIN_INTERVAL) -> dict[str, Any]:
        """Switch strict mode; returns the policy. ``min_interval`` must be >= 0 (ValueError)."""
        if min_interval < 0:
            raise ValueError("min_interval must be >= 0 seconds")
        with self._lock:
            self.strict = bool(strict)
            self.min_interval = float(min_interval)
        return self.policy()

    def policy(self) -> dict[str, Any]:
        return {"strict": self.strict, "min_interval": self.min_interval}

    def observe(self, kid: str, token: str, iat: Any, now: float) -> str | None:
        """Note a request of key ``kid`` carrying ``token``; the APNs reason to refuse it with
        (``ExpiredProviderToken``, ``TooManyProviderTokenUpdates``), or None (strict mode only
        refuses)."""
        with self._lock:
            key = self._keys.setdefault(kid, _Key())
            seen = key.tokens.get(token)
            if seen is None:
                seen = key.tokens[token] = _Seen(iat, now, now)
            seen.last_seen = now
            seen.requests += 1
            if key.last is not None and token != key.last:
                key.changes += 1
            key.last = token
            if self.strict and token in key.expired:
                seen.refused += 1
                return "ExpiredProviderToken"
            if key.current is None or token == key.current:
                if key.current is None:
                    key.current, key.current_since = token, _since(seen)
                return None
            if self.strict and now - key.current_since < self.min_interval:
                seen.refused += 1
                key.refused_updates += 1
                return "TooManyProviderTokenUpdates"
            key.current, key.current_since = token, _since(seen)
            return None

    def expire(self, kid: str, token: str) -> None:
        """APNs answered ``ExpiredProviderToken`` for ``token``."""
        with self._lock:
            key = self._keys.setdefault(kid, _Key())
            key.expired.add(token)
            if key.current == token:
                key.current = None

    def clear(self) -> None:
        """Forget every key's tokens (the policy stays)."""
        with self._lock:
            self._keys.clear()

    def as_dict(self) -> dict[str, Any]:
        """``{"strict", "min_interval", "keys": {kid: {"tokens": [...], "current", "changes",
        "refused_updates", "expired"}}}``; tokens oldest first, each ``{"token", "iat",
        "first_seen", "last_seen", "requests", "refused"}``."""
        with self._lock:
            keys = {
                kid: {
                    "tokens": [{"token": token, "iat": s.iat, "first_seen": s.first_seen,
                                "last_seen": s.last_seen, "requests": s.requests,
                                "refused": s.refused}
                               for token, s in sorted(key.tokens.items(),
                                                      key=lambda item: item[1].first_seen)],
                    "current": key.current, "changes": key.changes,
                    "refused_updates": key.refused_updates, "expired": sorted(key.expired),
                }
                for kid, key in self._keys.items()
            }
            return {**self.policy(), "keys": keys}

"""Provider tokens shared by every worker process: one token per signing key, minted in one place.

Some providers want one credential token per key at a time. Apple wants one APNs provider token
(JWT) per key id and team, re-signed no more often than every 20 minutes and no less often than
every 60, and answers 429 ``TooManyProviderTokenUpdates`` when tokens change faster; Google's
OAuth2 access tokens (FCM) last an hour and every process may use the same one. With several
worker processes each minting its own, Apple sees tokens for one key alternating.
:class:`SharedToken` keeps one token per key in a :class:`SharedTokenStore` that every process
reaches (Redis), plus a copy in the process so that a send does not ask the store:

- a process uses its copy until the entry's ``refresh_at``, then reads the store again;
- when the store has no entry, or one due for refresh, the process holding the store's lock (a
  Redis ``SET NX`` with a short TTL) mints the next one; the others wait briefly for it, or
  (``serve_stale``) keep using the current one while it is still valid;
- when the provider rejects a token, :meth:`SharedToken.reject` removes that exact token from the
  store (compare-and-delete), so a single process mints the replacement; a process reporting a
  token that was already replaced just adopts the replacement.

An adapter's config chooses the store with the keys :data:`STORE` (a SharedTokenStore, a
``redis://`` URL, or None) and :data:`STORE_PREFIX` (what the Redis keys start with). The service
passes its Redis URL; without one (the sandbox, unit tests) each adapter instance keeps its
tokens to itself (:class:`LocalTokenStore`). When the store fails (Redis down) the adapter mints
into its local store for that refresh rather than failing sends: one token per process, as
without a store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

log = logging.getLogger(__name__)

#: Config key: the SharedTokenStore, a ``redis://`` / ``rediss://`` / ``unix://`` URL, or None.
STORE = "token_store"
#: Config key: prefix of the store's Redis keys (``notify`` → ``notify:apns-token:<team>:<kid>``).
STORE_PREFIX = "token_store_prefix"
#: A token this close (seconds) to its expiry is not handed out while another process mints.
EXPIRY_MARGIN = 60.0


@dataclass(frozen=True)
class TokenEntry:
    """One provider token and its times (epoch seconds).

    Attributes:
        token: the token as sent (a JWT, an OAuth2 access token).
        issued_at: when it was minted.
        expires_at: when the provider stops accepting it (the store forgets it then).
        refresh_at: from when a new one should be minted.
    """

    token: str
    issued_at: float
    expires_at: float
    refresh_at: float


class TokenStoreError(Exception):
    """The shared store could not be reached or answered nonsense."""


class SharedTokenStore(Protocol):
    """Where processes share token entries, by key (e.g. ``apns-token:<team>:<kid>``)."""

    def load(self, key: str) -> TokenEntry | None:
        """The stored entry, or None. Raises TokenStoreError."""

    def save(self, key: str, entry: TokenEntry) -> None:
        """Store ``entry``, replacing any; it is forgotten at ``entry.expires_at``."""

    def discard(self, key: str, token: str) -> bool:
        """Delete the entry if it holds ``token`` (compare-and-delete); True if deleted."""

    def acquire(self, key: str, ttl: float) -> str | None:
        """Take the mint lock of ``key`` for ``ttl`` seconds: an owner id, or None if taken."""

    def release(self, key: str, owner: str) -> None:
        """Give the lock back if ``owner`` still holds it."""


class LocalTokenStore:
    """A SharedTokenStore inside one process (shared only by those holding this object)."""

    def __init__(self) -> None:
        self._entries: dict[str, TokenEntry] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()

    def load(self, key: str) -> TokenEntry | None:
        with self._mutex:
            entry = self._entries.get(key)
            if entry is not None and time.time() >= entry.expires_at:
                del self._entries[key]
                return None
            return entry

    def save(self, key: str, entry: TokenEntry) -> None:
        with self._mutex:
            self._entries[key] = entry

    def discard(self, key: str, token: str) -> bool:
        with self._mutex:
            entry = self._entries.get(key)
            if entry is not None and entry.token == token:
                del self._entries[key]
                return True
            return False

    def acquire(self, key: str, ttl: float) -> str | None:
        with self._mutex:
            held = self._locks.get(key)
            if held is not None and time.monotonic() < held[1]:
                return None
            owner = uuid.uuid4().hex
            self._locks[key] = (owner, time.monotonic() + ttl)
            return owner

    def release(self, key: str, owner: str) -> None:
        with self._mutex:
            if self._locks.get(key, ("",))[0] == owner:
                del self._locks[key]


# Compare-and-delete in one step: a process must not delete a token another one just stored.
_DISCARD = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisTokenStore:
    """A SharedTokenStore in Redis: each entry a hash ``<prefix>:<key>`` (fields ``token``,
    ``issued_at``, ``expires_at``, ``refresh_at``) expiring with the token; the mint lock a
    string ``<prefix>:<key>:lock`` set with ``NX`` and a TTL.

    Args:
        client: a ``redis.Redis`` client or a Redis URL (connected on first use).
        prefix: prepended to every key, with ``:`` (empty: none).
    """

    def __init__(self, client: Any, prefix: str = "") -> None:
        import redis

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        if isinstance(client, str):
            # Short timeouts: a send waits on this; a dead Redis means the local fallback.
            client = redis.Redis.from_url(client, socket_timeout=2, socket_connect_timeout=2)
        self._redis = client
        self._prefix = f"{prefix}:" if prefix else ""
        self._discard = client.register_script(_DISCARD)
        self._release = client.register_script(_RELEASE)

    def _key(self, key: str) -> str:
        return self._prefix + key

    def load(self, key: str) -> TokenEntry | None:
        try:
            fields = self._redis.hgetall(self._key(key))
        except self._errors as exc:
            raise TokenStoreError(f"load {key}: {exc}") from exc
        if not fields:
            return None
        try:
            text = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                    for k, v in fields.items()}
            return TokenEntry(text["token"], float(text["issued_at"]), float(text["expires_at"]),
                              float(text["refresh_at"]))
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise TokenStoreError(f"load {key}: malformed entry: {exc}") from exc

    def save(self, key: str, entry: TokenEntry) -> None:
        ttl_ms = int((entry.expires_at - time.time()) * 1000)
        if ttl_ms <= 0:
            return
        name = self._key(key)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(name)
                pipe.hset(name, mapping={"token": entry.token, "issued_at": repr(entry.issued_at),
                                         "expires_at": repr(entry.expires_at),
                                         "refresh_at": repr(entry.refresh_at)})
                pipe.pexpire(name, ttl_ms)
                pipe.execute()
        except self._errors as exc:
            raise TokenStoreError(f"save {key}: {exc}") from exc

    def discard(self, key: str, token: str) -> bool:
        try:
            return bool(self._discard(keys=[self._key(key)], args=[token]))
        except self._errors as exc:
            raise TokenStoreError(f"discard {key}: {exc}") from exc

    def acquire(self, key: str, ttl: float) -> str | None:
        owner = uuid.uuid4().hex
        try:
            taken = self._redis.set(self._key(key) + ":lock", owner, nx=True,
                                    px=max(1, int(ttl * 1000)))
        except self._errors as exc:
            raise TokenStoreError(f"lock {key}: {exc}") from exc
        return owner if taken else None

    def release(self, key: str, owner: str) -> None:
        try:
            self._release(keys=[self._key(key) + ":lock"], args=[owner])
        except self._errors as exc:
            raise TokenStoreError(f"unlock {key}: {exc}") from exc


_redis_stores: dict[tuple[int, str, str], RedisTokenStore] = {}
_redis_stores_lock = threading.Lock()


def store_from_config(config: Mapping[str, Any]) -> SharedTokenStore | None:
    """The store an adapter's config names (:data:`STORE`, :data:`STORE_PREFIX`), or None.

    A URL gives one RedisTokenStore per process, URL and prefix (one connection pool for every
    adapter of the process; keyed by process id because a forked child must not share its
    parent's sockets).

    Raises:
        ValueError: :data:`STORE` is neither a store, a URL nor empty.
    """
    value = config.get(STORE)
    if not value:
        return None
    if not isinstance(value, str):
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{STORE} must be a Redis URL, got {value!r}")
    prefix = str(config.get(STORE_PREFIX) or "")
    cache_key = (os.getpid(), value, prefix)
    with _redis_stores_lock:
        store = _redis_stores.get(cache_key)
        if store is None:
            store = _redis_stores[cache_key] = RedisTokenStore(value, prefix)
    return store


def store_config(url: str | None, prefix: str) -> dict[str, Any]:
    """The config keys that make adapters share tokens through Redis at ``url`` (the service
    adds them to every adapter's config; adapters that mint no tokens ignore them)."""
    return {STORE: url or None, STORE_PREFIX: prefix}


class SharedToken:
    """The current token of one key, shared through ``store`` (see the module docstring).

    Thread-safe. ``minted`` counts the tokens this instance minted (metrics and tests).

    Args:
        key: the store key, e.g. ``apns-token:<team>:<kid>``.
        mint: makes a new entry (signs a JWT, asks the OAuth2 endpoint); may raise, and then
            :meth:`get` raises the same.
        store: the shared store; None: a LocalTokenStore of this instance.
        lock_ttl: seconds the mint lock holds (longer than a mint takes).
        wait: seconds to wait for another process's mint; then the current token if it is
            still valid, else one this process mints for itself (not stored) rather than
            failing the send.
        serve_stale: while another process mints, use the current token if still valid (FCM:
            any valid access token works) instead of waiting for the new one (APNs: requests
            with the old token after the new one's would count as one more change).
    """

    def __init__(self, key: str, mint: Callable[[], TokenEntry],
                 store: SharedTokenStore | None = None, *, lock_ttl: float = 10.0,
                 wait: float | None = None, poll: float = 0.05, serve_stale: bool = True) -> None:
        self.key = key
        self._mint_entry = mint
        self.store: SharedTokenStore = store if store is not None else LocalTokenStore()
        self._fallback: LocalTokenStore | None = None
        self.serve_stale = serve_stale
        self.lock_ttl = lock_ttl
        # By default past the lock's TTL: a holder that died cannot make a waiter mint alone.
        self.wait = lock_ttl + 1.0 if wait is None else wait
        self.poll = poll
        self._lock = threading.Lock()
        self._entry: TokenEntry | None = None
        self.minted = 0

    def get(self) -> str:
        """The current token (from this process's copy until its refresh time)."""
        return self.entry().token

    def entry(self) -> TokenEntry:
        """The current entry; mints one when none is valid and this process holds the lock."""
        with self._lock:
            entry = self._entry
            if entry is not None and time.time() < entry.refresh_at:
                return entry
            try:
                entry = self._from_store(self.store)
            except TokenStoreError as exc:
                log.warning("shared token store unavailable for %s (%s): using a token of this "
                            "process", self.key, exc)
                if self._fallback is None:
                    self._fallback = LocalTokenStore()
                entry = self._from_store(self._fallback)
            self._entry = entry
            return entry

    def reject(self, token: str) -> None:
        """The provider refused ``token`` (expired): drop it here and, if still current, from
        the store, so the next :meth:`get` mints (or adopts) a replacement."""
        with self._lock:
            if self._entry is not None and self._entry.token == token:
                self._entry = None
            for store in (self.store, self._fallback):
                if store is None:
                    continue
                try:
                    store.discard(self.key, token)
                except TokenStoreError as exc:
                    log.warning("shared token store unavailable for %s (%s)", self.key, exc)

    def _mint(self) -> TokenEntry:
        entry = self._mint_entry()
        self.minted += 1
        return entry

    def _from_store(self, store: SharedTokenStore) -> TokenEntry:
        current = store.load(self.key)
        if current is not None and time.time() < current.refresh_at:
            return current
        deadline = time.monotonic() + self.wait
        while True:
            owner = store.acquire(self.key, self.lock_ttl)
            if owner is not None:
                try:
                    # Another process may have minted between our read and the lock.
                    current = store.load(self.key)
                    if current is not None and time.time() < current.refresh_at:
                        return current
                    fresh = self._mint()
                    store.save(self.key, fresh)
                    return fresh
                finally:
                    store.release(self.key, owner)
            # Another process is minting.
            valid = current is not None and time.time() < current.expires_at - EXPIRY_MARGIN
            if valid and self.serve_stale:
                return current  # type: ignore[return-value]
            if time.monotonic() >= deadline:
                if valid:
                    return current  # type: ignore[return-value]
                log.warning("no shared token for %s after %.1f s: minting one for this process",
                            self.key, self.wait)
                return self._mint()
            time.sleep(self.poll)
            current = store.load(self.key)
            if current is not None and time.time() < current.refresh_at:
                return current

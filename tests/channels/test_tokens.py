"""channels.tokens on its own: the Redis store's compare-and-delete and lock, waiting for another
process's mint, and the local fallback when Redis is unreachable."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest
import redis
from django.conf import settings

from channels.tokens import LocalTokenStore, RedisTokenStore, SharedToken, TokenEntry, \
    store_from_config


@pytest.fixture
def store():
    prefix = f"test-tokens-{uuid.uuid4().hex[:12]}"
    yield RedisTokenStore(settings.REDIS_URL, prefix)
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def entry(token: str, refresh_in: float = 1800, expires_in: float = 3600) -> TokenEntry:
    now = time.time()
    return TokenEntry(token, now, now + expires_in, now + refresh_in)


def counter_mint(name: str = "t"):
    numbers = itertools.count(1)
    return lambda: entry(f"{name}{next(numbers)}")


@pytest.mark.parametrize("make_store", [LocalTokenStore, None], ids=["local", "redis"])
def test_discard_only_deletes_the_token_it_names(make_store, store):
    store = make_store() if make_store else store
    store.save("k", entry("new"))
    assert store.discard("k", "old") is False  # another process already replaced "old"
    assert store.load("k").token == "new"
    assert store.discard("k", "new") is True and store.load("k") is None


@pytest.mark.parametrize("make_store", [LocalTokenStore, None], ids=["local", "redis"])
def test_lock_is_exclusive_and_released_by_its_owner_only(make_store, store):
    store = make_store() if make_store else store
    owner = store.acquire("k", 5)
    assert owner and store.acquire("k", 5) is None
    store.release("k", "someone-else")
    assert store.acquire("k", 5) is None
    store.release("k", owner)
    assert store.acquire("k", 5)


def test_redis_entry_expires_with_the_token(store):
    store.save("k", entry("t", refresh_in=0.1, expires_in=0.3))
    assert store.load("k").token == "t"
    time.sleep(0.5)
    assert store.load("k") is None


def test_a_waiter_takes_the_token_the_lock_holder_stores(store):
    """While another process holds the lock, nothing is minted here: the stored one is used."""
    holder = store.acquire("k", 5)

    def other_process_mints():
        time.sleep(0.3)
        store.save("k", entry("theirs"))
        store.release("k", holder)

    thread = threading.Thread(target=other_process_mints)
    thread.start()
    shared = SharedToken("k", counter_mint(), store, serve_stale=False)
    assert shared.get() == "theirs" and shared.minted == 0
    thread.join()


def test_stale_token_served_while_another_process_mints(store):
    store.save("k", entry("current", refresh_in=-1))
    store.acquire("k", 5)  # another process is minting
    shared = SharedToken("k", counter_mint(), store, serve_stale=True)
    assert shared.get() == "current" and shared.minted == 0


def test_cached_in_process_until_refresh_time(store):
    shared = SharedToken("k", counter_mint(), store)
    assert shared.get() == "t1"
    store.save("k", entry("other"))  # not read again before t1's refresh time
    assert shared.get() == "t1" and shared.minted == 1


def test_unreachable_redis_falls_back_to_a_token_of_this_process(caplog):
    dead = RedisTokenStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
    shared = SharedToken("k", counter_mint(), dead)
    assert shared.get() == "t1" and shared.get() == "t1"
    assert shared.minted == 1
    assert "shared token store unavailable" in caplog.text
    shared.reject("t1")  # does not raise either
    assert shared.get() == "t2"


def test_store_from_config():
    assert store_from_config({}) is None
    local = LocalTokenStore()
    assert store_from_config({"token_store": local}) is local
    first = store_from_config({"token_store": settings.REDIS_URL, "token_store_prefix": "p"})
    assert isinstance(first, RedisTokenStore)
    assert store_from_config({"token_store": settings.REDIS_URL, "token_store_prefix": "p"}) is first
    with pytest.raises(ValueError):
        store_from_config({"token_store": "http://example.com"})

"""Helpers of the shared provider token tests: worker processes, a Redis namespace per test."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from typing import Any

import redis
from django.conf import settings

from channels.apns import APNsChannel
from channels.base import Message
from channels.fcm import FCMChannel
from channels.tokens import STORE, STORE_PREFIX

from .channel_support import apns_token, fcm_token, new_id

#: Worker processes per test ("a worker pool").
PROCESSES = 4


def shared_configs(configs: dict[str, dict[str, Any]]):
    """Body of the tests' ``shared`` fixture: yields ``config(name, **overrides)``, the adapter
    config of ``name`` with a Redis token store under a prefix of this test's own (deleted
    afterwards), as notify.providers.config_for passes it."""
    prefix = f"test-shared-token-{uuid.uuid4().hex[:12]}"

    def config(name: str, **overrides: Any) -> dict[str, Any]:
        return {**configs[name], STORE: settings.REDIS_URL, STORE_PREFIX: prefix, **overrides}

    yield config
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()


def send_from_process(name: str, config: dict[str, Any], count: int, start_at: float) -> dict:
    """Run in a child process: build the adapter, wait for ``start_at`` (so the processes send
    at once), send ``count`` pushes one after the other. Returns ``{"results": [(outcome,
    reason, status)], "minted": tokens this process signed / fetched, "tos": the device tokens
    it sent to}``."""
    channel = (APNsChannel if name == "apns" else FCMChannel)(config)
    try:
        time.sleep(max(0.0, start_at - time.time()))
        results, tos = [], []
        for _ in range(count):
            to = apns_token() if name == "apns" else fcm_token()
            tos.append(to)
            result = channel.deliver(Message(new_id(), to, {"title": "t", "body": "b"}))
            results.append((result.outcome.value, result.reason, result.status))
        minted = channel.token.signed if name == "apns" else channel.credentials.shared.minted
        return {"results": results, "minted": minted, "tos": tos}
    finally:
        channel.close()


def run_processes(name: str, configs: list[dict[str, Any]], count: int,
                  delay: float = 4.0) -> list[dict]:
    """``send_from_process`` in one fresh (spawned) process per config, all starting together."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + delay
    with context.Pool(len(configs)) as pool:
        return pool.starmap(send_from_process,
                            [(name, config, count, start_at) for config in configs], chunksize=1)


def sent_to(runs: list[dict]) -> set[str]:
    """Every device token the processes sent to."""
    return {to for run in runs for to in run["tos"]}


def outcomes(runs: list[dict]) -> list[tuple]:
    """Every (outcome, reason, status) of every process."""
    return [r for run in runs for r in run["results"]]


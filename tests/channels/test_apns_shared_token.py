"""One APNs provider token per key for every worker process (channels.tokens, through Redis).

Worker processes are real ones (spawned), each with its own adapter, as Celery's prefork pool
has them. The sandbox records every distinct provider token per key id and, in strict mode,
answers 429 ``TooManyProviderTokenUpdates`` when a key's token changes within 20 minutes.
"""

from __future__ import annotations

import time

import jwt
import pytest
from django.conf import settings

from channels.base import Message, Outcome
from channels.tokens import STORE_PREFIX, RedisTokenStore, TokenEntry

from .channel_support import apns_token, new_id
from .shared_token_support import PROCESSES, outcomes, run_processes, shared_configs

SENT = ("sent", None, 200)
TOO_MANY = ("retry", "TooManyProviderTokenUpdates", 429)
EXPIRED = ("retry", "ExpiredProviderToken", 403)


@pytest.fixture
def shared(configs):
    yield from shared_configs(configs)


@pytest.fixture
def seen(ctl):
    """``seen()``: the sandbox's record of the sandbox key's provider tokens, emptied for this
    test; strict mode is switched off after it."""
    ctl.clear_apns_tokens()
    kid = ctl.config()["apns"]["key_id"]

    def key_log() -> dict:
        return ctl.apns_tokens()["keys"].get(kid, {"tokens": [], "changes": 0,
                                                   "refused_updates": 0})

    yield key_log
    ctl.apns_token_policy(False)


def push(to: str | None = None) -> Message:
    return Message(new_id(), to or apns_token(), {"title": "t", "body": "b"})


def bearer(ctl) -> str:
    """The provider token of the sandbox's latest APNs request."""
    return ctl.records("apns")[-1]["headers"]["authorization"].split(" ", 1)[1]


def test_processes_share_one_token_and_strict_apns_answers_no_429(shared, ctl, seen):
    ctl.apns_token_policy(True)
    runs = run_processes("apns", [shared("apns")] * PROCESSES, count=10)

    assert outcomes(runs) == [SENT] * (PROCESSES * 10)
    assert sum(run["minted"] for run in runs) == 1  # one process signed, the others read it
    log = seen()
    assert len(log["tokens"]) == 1 and log["tokens"][0]["requests"] == PROCESSES * 10
    assert (log["changes"], log["refused_updates"]) == (0, 0)


def test_without_a_shared_store_each_process_signs_and_strict_apns_refuses(configs, ctl, seen):
    """What the shared store prevents (and that the sandbox's strict mode sees it)."""
    ctl.apns_token_policy(True)
    runs = run_processes("apns", [configs["apns"]] * PROCESSES, count=5)

    assert [run["minted"] for run in runs] == [1] * PROCESSES
    assert len(seen()["tokens"]) == PROCESSES
    # the key's first token stays current: every other process is refused on every send
    assert outcomes(runs).count(TOO_MANY) == (PROCESSES - 1) * 5
    assert outcomes(runs).count(SENT) == 5


def test_rejected_token_is_replaced_once_across_instances(shared, make_channel, ctl, seen):
    a = make_channel("apns", **shared("apns"))
    b = make_channel("apns", **shared("apns"))
    assert a.deliver(push()).outcome is Outcome.SENT
    assert b.deliver(push()).outcome is Outcome.SENT
    first = bearer(ctl)

    to_a, to_b = apns_token(), apns_token()
    ctl.add_fault(provider="apns", status=403, reason="ExpiredProviderToken", count=1, to=to_a)
    assert a.deliver(push(to_a)).reason == "ExpiredProviderToken"
    assert a.deliver(push()).outcome is Outcome.SENT  # a signs the replacement
    second = bearer(ctl)
    # b still holds the rejected token: Apple refuses it to b as well...
    ctl.add_fault(provider="apns", status=403, reason="ExpiredProviderToken", count=1, to=to_b)
    assert b.deliver(push(to_b)).reason == "ExpiredProviderToken"
    # ...and b adopts a's replacement instead of dropping it and signing a third
    assert b.deliver(push()).outcome is Outcome.SENT

    assert first != second == bearer(ctl)
    assert (a.token.signed, b.token.signed) == (2, 0)
    assert [t["token"] for t in seen()["tokens"]] == [first, second]


def test_rejected_token_is_replaced_once_across_processes(shared, make_channel, ctl, seen):
    """Strict mode: once Apple answered ExpiredProviderToken the token stays expired for every
    process; one of them signs the replacement, the others adopt it, nobody gets 429."""
    seeder = make_channel("apns", **shared("apns"))
    assert seeder.deliver(push()).outcome is Outcome.SENT
    first = bearer(ctl)
    ctl.apns_token_policy(True)
    ctl.add_fault(provider="apns", status=403, reason="ExpiredProviderToken", count=1)

    runs = run_processes("apns", [shared("apns")] * PROCESSES, count=3)

    assert sum(run["minted"] for run in runs) == 1
    for run in runs:
        assert run["results"][-1] == SENT
        assert set(run["results"]) <= {SENT, EXPIRED} and run["results"].count(EXPIRED) <= 1
    assert EXPIRED in outcomes(runs) and TOO_MANY not in outcomes(runs)
    tokens = [t["token"] for t in seen()["tokens"]]
    assert len(tokens) == 2 and tokens[0] == first
    assert seen()["refused_updates"] == 0


def test_token_past_its_refresh_age_is_resigned_once(shared, configs, make_channel, ctl, seen):
    """A token 31 minutes old (still valid, due for refresh) is replaced by exactly one of the
    processes sending at once; strict mode sees one change, allowed after 20 minutes."""
    config = shared("apns")
    with open(configs["apns"]["key_file"], "rb") as fh:
        key = fh.read()
    issued = int(time.time()) - 31 * 60
    old = jwt.encode({"iss": configs["apns"]["team_id"], "iat": issued}, key, algorithm="ES256",
                     headers={"kid": configs["apns"]["key_id"]})
    store = RedisTokenStore(settings.REDIS_URL, config[STORE_PREFIX])
    store_key = make_channel("apns", **config).token.store_key
    store.save(store_key, TokenEntry(old, issued, issued + 3600, issued + 30 * 60))
    ctl.apns_token_policy(True)

    runs = run_processes("apns", [config] * PROCESSES, count=5)

    assert outcomes(runs) == [SENT] * (PROCESSES * 5)
    assert sum(run["minted"] for run in runs) == 1
    tokens = seen()["tokens"]
    # only the new one was sent: while one process signed, the others waited for it
    assert len(tokens) == 1 and tokens[0]["iat"] > issued + 30 * 60
    assert store.load(store_key).token == tokens[0]["token"]

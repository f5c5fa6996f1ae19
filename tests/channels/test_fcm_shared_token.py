"""One FCM OAuth2 access token per service account for every worker process (channels.tokens,
through Redis); google-auth still makes the token request. The sandbox records each ``/token``
call of its OAuth2 endpoint."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from channels.base import Message, Outcome
from channels.tokens import STORE_PREFIX, RedisTokenStore, TokenEntry

from .channel_support import fcm_token, new_id
from .shared_token_support import PROCESSES, outcomes, run_processes, sent_to, shared_configs

SENT = ("sent", None, 200)


@pytest.fixture
def shared(configs):
    yield from shared_configs(configs)


def push(to: str | None = None) -> Message:
    return Message(new_id(), to or fcm_token(), {"title": "t", "body": "b"})


def token_requests(ctl) -> list[dict]:
    return [r for r in ctl.records("fcm") if r["path"] == "/token"]


def send_authorizations(ctl, tos: set[str] | None = None) -> list[str]:
    """The bearer tokens of the sandbox's message requests; with ``tos``, only of the messages
    to those registration tokens (a request an earlier test timed out on can be recorded late,
    after this test cleared the records)."""
    return [r["headers"]["authorization"] for r in ctl.records("fcm") if r["path"] != "/token"
            and (tos is None or (r.get("body") or {}).get("message", {}).get("token") in tos)]


def test_processes_share_one_access_token(shared, ctl):
    runs = run_processes("fcm", [shared("fcm")] * PROCESSES, count=5)

    assert outcomes(runs) == [SENT] * (PROCESSES * 5)
    assert len(token_requests(ctl)) == 1
    assert sum(run["minted"] for run in runs) == 1
    authorizations = send_authorizations(ctl, sent_to(runs))
    assert len(authorizations) == PROCESSES * 5 and len(set(authorizations)) == 1


def test_without_a_shared_store_each_process_fetches_its_own(configs, ctl):
    runs = run_processes("fcm", [configs["fcm"]] * PROCESSES, count=2)

    assert outcomes(runs) == [SENT] * (PROCESSES * 2)
    assert len(token_requests(ctl)) == PROCESSES
    assert len(set(send_authorizations(ctl, sent_to(runs)))) == PROCESSES


def test_refused_access_token_is_replaced_once_across_instances(shared, make_channel, ctl):
    a = make_channel("fcm", **shared("fcm"))
    b = make_channel("fcm", **shared("fcm"))
    assert a.deliver(push()).outcome is Outcome.SENT
    assert b.deliver(push()).outcome is Outcome.SENT  # adopts a's token
    assert len(token_requests(ctl)) == 1

    to_a, to_b = fcm_token(), fcm_token()
    ctl.add_fault(provider="fcm", status=401, reason="UNAUTHENTICATED", count=1, to=to_a)
    assert a.deliver(push(to_a)).reason == "UNAUTHENTICATED"
    assert a.deliver(push()).outcome is Outcome.SENT  # a fetches the replacement
    # b still holds the refused token: refused again, b then adopts a's replacement
    ctl.add_fault(provider="fcm", status=401, reason="UNAUTHENTICATED", count=1, to=to_b)
    assert b.deliver(push(to_b)).reason == "UNAUTHENTICATED"
    assert b.deliver(push()).outcome is Outcome.SENT

    assert len(token_requests(ctl)) == 2
    auths = send_authorizations(ctl)
    assert auths[0] == auths[1] == auths[2] == auths[4] != auths[3] == auths[5]
    assert (a.credentials.shared.minted, b.credentials.shared.minted) == (2, 0)


def test_token_due_for_refresh_is_fetched_once(shared, make_channel, ctl):
    """An access token near its expiry is replaced by exactly one of the processes sending at
    once; the others keep using it meanwhile (it is still valid)."""
    config = shared("fcm")
    seeder = make_channel("fcm", **config)
    assert seeder.deliver(push()).outcome is Outcome.SENT
    shared_token = seeder.credentials.shared
    store = RedisTokenStore(settings.REDIS_URL, config[STORE_PREFIX])
    entry = store.load(shared_token.key)
    assert entry is not None and entry.token == seeder.credentials.token
    store.save(shared_token.key, TokenEntry(entry.token, entry.issued_at, entry.expires_at,
                                            time.time() - 1))

    runs = run_processes("fcm", [config] * PROCESSES, count=3)

    assert outcomes(runs) == [SENT] * (PROCESSES * 3)
    assert sum(run["minted"] for run in runs) == 1
    assert len(token_requests(ctl)) == 2
    renewed = store.load(shared_token.key)
    assert renewed.token != entry.token and renewed.refresh_at > time.time() + 30 * 60

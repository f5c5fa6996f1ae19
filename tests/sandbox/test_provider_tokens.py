"""The sandbox's APNs provider token log and strict one-token-per-key rule
(sandbox.provider_tokens), and its control routes. The adapters' use of it: tests/channels/
test_apns_shared_token.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx

from sandbox.control import build_control_app
from sandbox.provider_tokens import ProviderTokens

NOW = 1_800_000_000.0
TOO_MANY = "TooManyProviderTokenUpdates"


def test_records_tokens_and_counts_changes_without_refusing():
    tokens = ProviderTokens()
    for token in ("A", "B", "A", "A", "B"):
        assert tokens.observe("KID", token, NOW, NOW) is None
    key = tokens.as_dict()["keys"]["KID"]
    assert [(t["token"], t["requests"]) for t in key["tokens"]] == [("A", 3), ("B", 2)]
    assert key["changes"] == 3 and key["refused_updates"] == 0


def test_strict_refuses_a_change_within_the_interval_and_keeps_the_current_token():
    tokens = ProviderTokens()
    tokens.set_policy(True, 1200)
    assert tokens.observe("KID", "A", NOW, NOW) is None
    assert tokens.observe("KID", "B", NOW + 5, NOW + 5) == TOO_MANY
    assert tokens.observe("KID", "A", NOW, NOW + 6) is None
    assert tokens.observe("KID", "C", NOW + 1201, NOW + 1201) is None  # 20 minutes later
    assert tokens.observe("KID", "A", NOW, NOW + 1202) == TOO_MANY  # back to an old one
    assert tokens.observe("OTHER", "X", NOW, NOW + 7) is None  # counted per key
    key = tokens.as_dict()["keys"]["KID"]
    assert key["current"] == "C" and key["refused_updates"] == 2


def test_strict_counts_from_the_current_tokens_iat():
    tokens = ProviderTokens()
    tokens.set_policy(True)
    assert tokens.observe("KID", "A", NOW - 1900, NOW) is None  # signed 31 minutes ago
    assert tokens.observe("KID", "B", NOW, NOW + 1) is None


def test_strict_expired_token_stays_expired_and_its_successor_is_adopted_at_once():
    tokens = ProviderTokens()
    tokens.set_policy(True)
    assert tokens.observe("KID", "A", NOW, NOW) is None
    tokens.expire("KID", "A")
    assert tokens.observe("KID", "B", NOW + 1, NOW + 1) is None
    assert tokens.observe("KID", "A", NOW, NOW + 2) == "ExpiredProviderToken"
    assert tokens.as_dict()["keys"]["KID"]["refused_updates"] == 0


def test_control_routes():
    state = SimpleNamespace(apns_tokens=ProviderTokens())

    async def calls():
        transport = httpx.ASGITransport(app=build_control_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            assert (await client.get("/apns/token-policy")).json() == \
                {"strict": False, "min_interval": 1200}
            answer = await client.put("/apns/token-policy", json={"strict": True, "min_interval": 60})
            assert answer.json() == {"strict": True, "min_interval": 60}
            assert state.apns_tokens.strict
            for body in ({}, {"strict": "yes"}, {"strict": True, "min_interval": "x"},
                         {"strict": True, "min_interval": -1}):
                assert (await client.put("/apns/token-policy", json=body)).status_code == 400
            state.apns_tokens.observe("KID", "A", NOW, NOW)
            seen = (await client.get("/apns/provider-tokens")).json()
            assert seen["keys"]["KID"]["tokens"][0]["token"] == "A"
            assert (await client.delete("/apns/provider-tokens")).json() == {"ok": True}
            assert (await client.get("/apns/provider-tokens")).json() == \
                {"strict": True, "min_interval": 60, "keys": {}}

    asyncio.run(calls())

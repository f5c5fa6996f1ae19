"""APNs emulator driven by httpx (HTTP/2) + PyJWT, as the product's APNs adapter does."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import apns_jwt

TOKEN = "a1" * 32


def test_accepts_valid_push_and_records_it(ctl, cfg, apns_send):
    did = str(uuid.uuid4())
    r = apns_send(TOKEN, headers={"apns-id": did, "apns-collapse-id": "c1"})
    assert r.status_code == 200
    assert r.http_version == "HTTP/2"
    assert r.headers["apns-id"] == did
    assert r.content == b""
    rec = ctl.wait_for("apns", lambda x: x["delivery_id"] == did)
    assert rec["accepted"] is True and rec["status"] == 200 and rec["reason"] is None
    assert rec["to"] == TOKEN
    assert rec["http_version"] == "2"
    assert rec["path"] == f"/3/device/{TOKEN}"
    assert rec["body"] == {"aps": {"alert": {"title": "t", "body": "b"}}}
    assert rec["headers"]["apns-topic"] == cfg["apns"]["topic"]
    assert rec["extra"]["jwt_claims"]["iss"] == cfg["apns"]["team_id"]
    assert rec["extra"]["collapse_id"] == "c1"


def test_generates_apns_id_when_absent(ctl, apns_send):
    r = apns_send(TOKEN, headers={"apns-id": None})
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}",
                        r.headers["apns-id"])


def test_refuses_http1(ctl, cfg, ca, apns_token):
    with httpx.Client(http2=False, verify=ca) as c:
        r = c.post(f"{cfg['apns']['url']}/3/device/{TOKEN}", json={"aps": {}},
                   headers={"authorization": f"bearer {apns_token}",
                            "apns-topic": cfg["apns"]["topic"]})
    assert r.status_code == 505
    assert r.json() == {"reason": "HTTP2Required"}
    rec = ctl.records("apns")[-1]
    assert rec["http_version"] == "1.1" and rec["accepted"] is False


def _reason(r: httpx.Response) -> str:
    return r.json()["reason"]


def test_bad_device_token(ctl, apns_send):
    r = apns_send("abc123")
    assert r.status_code == 400 and _reason(r) == "BadDeviceToken"
    r = apns_send("g" * 64)
    assert r.status_code == 400 and _reason(r) == "BadDeviceToken"
    rec = ctl.records("apns")[-1]
    assert rec["accepted"] is False and rec["reason"] == "BadDeviceToken" and rec["status"] == 400


def test_provider_token_rules(ctl, cfg, apns_send):
    r = apns_send(TOKEN, auth=None)
    assert r.status_code == 403 and _reason(r) == "MissingProviderToken"
    r = apns_send(TOKEN, auth="bearer " + apns_jwt(cfg, kid="ABCDEFGHIJ"))
    assert r.status_code == 403 and _reason(r) == "InvalidProviderToken"
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    r = apns_send(TOKEN, auth="bearer " + apns_jwt(cfg, key=other))
    assert r.status_code == 403 and _reason(r) == "InvalidProviderToken"
    r = apns_send(TOKEN, auth="bearer " + apns_jwt(cfg, iss="XXXXXXXXXX"))
    assert r.status_code == 403 and _reason(r) == "InvalidProviderToken"
    r = apns_send(TOKEN, auth="bearer " + apns_jwt(cfg, iat=int(time.time()) - 3700))
    assert r.status_code == 403 and _reason(r) == "ExpiredProviderToken"
    r = apns_send(TOKEN, auth="bearer not-a-jwt")
    assert r.status_code == 403 and _reason(r) == "InvalidProviderToken"
    # HS256 with the key id is not accepted either
    hs = jwt.encode({"iss": cfg["apns"]["team_id"], "iat": int(time.time())}, "s" * 32,
                    algorithm="HS256", headers={"kid": cfg["apns"]["key_id"]})
    r = apns_send(TOKEN, auth="bearer " + hs)
    assert r.status_code == 403 and _reason(r) == "InvalidProviderToken"
    # a token 50 minutes old is still fine
    r = apns_send(TOKEN, auth="bearer " + apns_jwt(cfg, iat=int(time.time()) - 3000))
    assert r.status_code == 200


def test_topic_rules(ctl, cfg, apns_send):
    r = apns_send(TOKEN, headers={"apns-topic": None})
    assert r.status_code == 400 and _reason(r) == "MissingTopic"
    r = apns_send(TOKEN, headers={"apns-topic": "com.other.app"})
    assert r.status_code == 400 and _reason(r) == "TopicDisallowed"
    r = apns_send(TOKEN, headers={"apns-push-type": "voip"})
    assert r.status_code == 400 and _reason(r) == "TopicDisallowed"
    r = apns_send(TOKEN, headers={"apns-push-type": "voip",
                                  "apns-topic": cfg["apns"]["topic"] + ".voip"})
    assert r.status_code == 200


def test_push_type_and_priority(ctl, apns_send):
    r = apns_send(TOKEN, headers={"apns-push-type": "banana"})
    assert r.status_code == 400 and _reason(r) == "InvalidPushType"
    r = apns_send(TOKEN, headers={"apns-push-type": "background", "apns-priority": "10"},
                  payload={"aps": {"content-available": 1}})
    assert r.status_code == 400 and _reason(r) == "BadPriority"
    r = apns_send(TOKEN, headers={"apns-push-type": "background", "apns-priority": "5"},
                  payload={"aps": {"content-available": 1}})
    assert r.status_code == 200
    r = apns_send(TOKEN, headers={"apns-priority": "7"})
    assert r.status_code == 400 and _reason(r) == "BadPriority"
    for p in ("10", "5", "1"):
        assert apns_send(TOKEN, headers={"apns-priority": p}).status_code == 200


def test_header_value_rules(ctl, apns_send):
    r = apns_send(TOKEN, headers={"apns-collapse-id": "x" * 65})
    assert r.status_code == 400 and _reason(r) == "BadCollapseId"
    r = apns_send(TOKEN, headers={"apns-collapse-id": ("é" * 33).encode()})  # 66 bytes
    assert r.status_code == 400 and _reason(r) == "BadCollapseId"
    assert apns_send(TOKEN, headers={"apns-collapse-id": "x" * 64}).status_code == 200
    r = apns_send(TOKEN, headers={"apns-id": "not-a-uuid"})
    assert r.status_code == 400 and _reason(r) == "BadMessageId"
    r = apns_send(TOKEN, headers={"apns-expiration": "tomorrow"})
    assert r.status_code == 400 and _reason(r) == "BadExpirationDate"
    assert apns_send(TOKEN, headers={"apns-expiration": "0"}).status_code == 200


def test_payload_rules(ctl, cfg, apns_send):
    r = apns_send(TOKEN, content=b"")
    assert r.status_code == 400 and _reason(r) == "PayloadEmpty"
    r = apns_send(TOKEN, content=b"{not json")
    assert r.status_code == 400
    r = apns_send(TOKEN, payload={"alert": "no aps"})
    assert r.status_code == 400
    # exactly 4096 bytes passes, 4097 does not (counted in UTF-8 bytes)
    base = b'{"aps":{"alert":""}}'
    body = base[:-3] + b"x" * (4096 - len(base)) + base[-3:]
    assert len(body) == 4096
    assert apns_send(TOKEN, content=body).status_code == 200
    body = base[:-3] + b"x" * (4097 - len(base)) + base[-3:]
    r = apns_send(TOKEN, content=body)
    assert r.status_code == 413 and _reason(r) == "PayloadTooLarge"
    # multibyte characters count as bytes
    r = apns_send(TOKEN, payload={"aps": {"alert": "é" * 2100}})
    assert r.status_code == 413
    # VoIP allows 5120 bytes
    voip = {"apns-push-type": "voip", "apns-topic": cfg["apns"]["topic"] + ".voip"}
    assert apns_send(TOKEN, content=base[:-3] + b"x" * 5000 + base[-3:],
                     headers=voip).status_code == 200
    r = apns_send(TOKEN, content=base[:-3] + b"x" * 5200 + base[-3:], headers=voip)
    assert r.status_code == 413


def test_path_and_method(ctl, cfg, apns_client, apns_token):
    h = {"authorization": f"bearer {apns_token}", "apns-topic": cfg["apns"]["topic"]}
    r = apns_client.post(f"{cfg['apns']['url']}/3/other/{TOKEN}", json={"aps": {}}, headers=h)
    assert r.status_code == 404 and _reason(r) == "BadPath"
    r = apns_client.get(f"{cfg['apns']['url']}/3/device/{TOKEN}", headers=h)
    assert r.status_code == 405 and _reason(r) == "MethodNotAllowed"
    r = apns_client.post(f"{cfg['apns']['url']}/3/device/", json={"aps": {}}, headers=h)
    assert r.status_code == 400 and _reason(r) == "MissingDeviceToken"


def test_dead_token_410(ctl, apns_send):
    token = "d0" * 32
    assert apns_send(token).status_code == 200
    before = int(time.time() * 1000)
    ctl.kill_token("apns", token)
    r = apns_send(token)
    assert r.status_code == 410
    body = r.json()
    assert body["reason"] == "Unregistered"
    assert isinstance(body["timestamp"], int) and body["timestamp"] >= before - 1000
    rec = ctl.records("apns")[-1]
    assert rec["accepted"] is False and rec["reason"] == "Unregistered"
    assert apns_send("d1" * 32).status_code == 200  # other tokens unaffected


def test_many_concurrent_streams_on_one_connection(ctl, cfg, apns_token, ca):
    import asyncio

    async def main():
        async with httpx.AsyncClient(http2=True, verify=ca) as c:
            async def one(i):
                return await c.post(
                    f"{cfg['apns']['url']}/3/device/{TOKEN}", json={"aps": {"alert": str(i)}},
                    headers={"authorization": f"bearer {apns_token}",
                             "apns-topic": cfg["apns"]["topic"]})
            return await asyncio.gather(*(one(i) for i in range(50)))

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 50
    assert len(ctl.records("apns", accepted=True)) == 50

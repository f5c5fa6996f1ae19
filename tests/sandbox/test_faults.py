"""Fault rules (contract: sandbox/README.md "Fault rules"), through each provider's client."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException

from sandbox.client import SandboxError

TOKEN = "fa" * 32


def test_status_retry_after_and_count_expiry(ctl, apns_send):
    rule = ctl.add_fault(provider="apns", status=503, reason="ServiceUnavailable", count=2,
                         retry_after=2)
    assert rule["id"] > 0 and ctl.faults()[0]["count"] == 2
    for _ in range(2):
        r = apns_send(TOKEN)
        assert r.status_code == 503
        assert r.json() == {"reason": "ServiceUnavailable"}
        assert r.headers["retry-after"] == "2"
    assert ctl.faults() == []
    assert apns_send(TOKEN).status_code == 200
    recs = ctl.records("apns")
    assert [(x["status"], x["accepted"], x["reason"]) for x in recs] == [
        (503, False, "ServiceUnavailable"), (503, False, "ServiceUnavailable"), (200, True, None)]
    assert recs[0]["extra"]["fault_id"] == rule["id"]


def test_default_reason_from_status(ctl, apns_send):
    ctl.add_fault(provider="apns", status=429, count=1)
    r = apns_send(TOKEN)
    assert r.status_code == 429 and r.json()["reason"] == "TooManyRequests"


def test_rate(ctl, apns_send):
    ctl.add_fault(provider="apns", status=500, rate=0.0)
    assert all(apns_send(TOKEN).status_code == 200 for _ in range(20))
    ctl.clear_faults()
    ctl.add_fault(provider="apns", status=500, rate=0.5)
    codes = [apns_send(TOKEN).status_code for _ in range(200)]
    assert set(codes) == {200, 500}
    assert 60 <= codes.count(500) <= 140


def test_to_only_matches_that_recipient(ctl, apns_send):
    ctl.add_fault(provider="apns", status=500, to=TOKEN)
    assert apns_send("fb" * 32).status_code == 200
    assert apns_send(TOKEN).status_code == 500


def test_latency_does_not_block_other_requests(ctl, cfg, ca, apns_token):
    slow, fast = "5a" * 32, "fa" * 32
    ctl.add_fault(provider="apns", latency_ms=600, to=slow)

    async def main():
        async with httpx.AsyncClient(http2=True, verify=ca) as c:
            h = {"authorization": f"bearer {apns_token}", "apns-topic": cfg["apns"]["topic"]}

            async def one(token):
                t = time.monotonic()
                r = await c.post(f"{cfg['apns']['url']}/3/device/{token}",
                                 json={"aps": {}}, headers=h)
                return r.status_code, time.monotonic() - t, time.monotonic()

            slow_task = asyncio.create_task(one(slow))
            await asyncio.sleep(0.05)
            fast_result = await one(fast)
            return await slow_task, fast_result

    (s_code, s_took, s_end), (f_code, f_took, f_end) = asyncio.run(main())
    assert (s_code, f_code) == (200, 200)
    assert s_took >= 0.6
    assert f_took < 0.4 and f_end < s_end


def test_after_accept_delivers_but_answers_error(ctl, apns_send):
    did = str(uuid.uuid4())
    ctl.add_fault(provider="apns", status=500, reason="InternalServerError", after_accept=True,
                  count=1)
    r = apns_send(TOKEN, headers={"apns-id": did})
    assert r.status_code == 500 and r.json()["reason"] == "InternalServerError"
    rec = ctl.records("apns")[-1]
    assert rec["accepted"] is True and rec["status"] == 500
    assert [m["delivery_id"] for m in ctl.inbox("apns", to=TOKEN)] == [did]


def test_latency_with_status(ctl, apns_send):
    ctl.add_fault(provider="apns", status=503, latency_ms=300, count=1)
    t = time.monotonic()
    assert apns_send(TOKEN).status_code == 503
    assert time.monotonic() - t >= 0.3


def test_fcm_fault_shapes(ctl, fcm_session, fcm_url):
    ctl.add_fault(provider="fcm", status=503, retry_after=7, count=1)
    r = fcm_session.post(fcm_url, json={"message": {"token": "t" * 100}})
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    err = r.json()["error"]
    assert err["status"] == "UNAVAILABLE" and err["code"] == 503
    assert err["details"] == [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                               "errorCode": "UNAVAILABLE"}]
    ctl.add_fault(provider="fcm", status=429, reason="QUOTA_EXCEEDED", count=1)
    r = fcm_session.post(fcm_url, json={"message": {"token": "t" * 100}})
    err = r.json()["error"]
    assert (r.status_code, err["status"], err["details"][0]["errorCode"]) == (
        429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    ctl.add_fault(provider="fcm", status=403, reason="SENDER_ID_MISMATCH", count=1)
    r = fcm_session.post(fcm_url, json={"message": {"token": "t" * 100}})
    assert r.status_code == 403
    assert r.json()["error"]["details"][0]["errorCode"] == "SENDER_ID_MISMATCH"
    assert fcm_session.post(fcm_url, json={"message": {"token": "t" * 100}}).status_code == 200


def test_twilio_fault_codes(ctl, cfg, twilio_client):
    frm = cfg["twilio"]["from_number"]
    ctl.add_fault(provider="twilio", status=400, code=21610, to="+14155550100")
    with pytest.raises(TwilioRestException) as exc:
        twilio_client.messages.create(to="+14155550100", from_=frm, body="x")
    assert (exc.value.status, exc.value.code) == (400, 21610)
    assert twilio_client.messages.create(to="+14155550101", from_=frm, body="x").sid
    ctl.clear_faults()
    ctl.add_fault(provider="twilio", status=429, count=1, retry_after=1)
    with pytest.raises(TwilioRestException) as exc:
        twilio_client.messages.create(to="+14155550101", from_=frm, body="x")
    assert (exc.value.status, exc.value.code) == (429, 20429)
    assert ctl.records("twilio")[0]["reason"] == "21610"


def test_webpush_fault(ctl, cfg, webpush_session):
    from .test_webpush import raw_push
    sub = ctl.create_subscription()
    ctl.add_fault(provider="webpush", status=429, retry_after=5, count=1)
    r = raw_push(webpush_session, cfg, sub)
    assert r.status_code == 429 and r.headers["Retry-After"] == "5"
    assert r.json()["code"] == 429
    assert raw_push(webpush_session, cfg, sub).status_code == 201


def test_fault_api_validation_and_delete(ctl):
    for bad in ({"provider": "pigeon", "status": 500}, {"provider": "apns"},
                {"provider": "apns", "status": 500, "rate": 2},
                {"provider": "apns", "status": 500, "count": 0},
                {"provider": "apns", "status": 500, "bogus": 1},
                {"provider": "apns", "after_accept": True, "latency_ms": 5},
                {"provider": "apns", "callback_status": "undelivered"}):
        with pytest.raises(SandboxError):
            ctl.add_fault(**bad)
    a = ctl.add_fault(provider="apns", status=500)
    b = ctl.add_fault(provider="fcm", latency_ms=10)
    ctl.delete_fault(a["id"])
    assert [f["id"] for f in ctl.faults()] == [b["id"]]
    with pytest.raises(SandboxError):
        ctl.delete_fault(a["id"])

"""Web Push emulator driven by pywebpush (RFC 8291 encryption + RFC 8292 VAPID)."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pywebpush import WebPusher, WebPushException, webpush


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _origin(cfg) -> str:
    return cfg["webpush"]["url"]


def vapid_auth(cfg, claims: dict | None = None, key=None, drop: tuple = ()) -> str:
    """A hand-made ``vapid t=..., k=...`` header (py_vapid refuses to make broken ones)."""
    if key is None:
        key = serialization.load_pem_private_key(
            open(cfg["webpush"]["vapid_private_key_file"], "rb").read(), None)
    c = {"aud": _origin(cfg), "exp": int(time.time()) + 3600,
         "sub": cfg["webpush"]["vapid_subject"]}
    c.update(claims or {})
    for k in drop:
        c.pop(k, None)
    token = jwt.encode(c, key, algorithm="ES256")
    raw = key.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    return f"vapid t={token}, k={b64(raw)}"


def raw_push(session, cfg, sub, data: str | None = "{}", headers: dict | None = None,
             auth: str | None = "default"):
    body = WebPusher(sub).encode(data.encode(), "aes128gcm")["body"] if data else b""
    h = {"TTL": "60", "Content-Encoding": "aes128gcm"}
    if auth == "default":
        h["Authorization"] = vapid_auth(cfg)
    elif auth is not None:
        h["Authorization"] = auth
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    return session.post(sub["endpoint"], data=body, headers=h)


def send(cfg, session, sub, payload: dict, **kw):
    return webpush(sub, json.dumps(payload), vapid_private_key=cfg["webpush"][
        "vapid_private_key_file"], vapid_claims={"sub": cfg["webpush"]["vapid_subject"]},
        ttl=kw.pop("ttl", 60), requests_session=session, **kw)


def test_subscription_shape(ctl, cfg):
    sub = ctl.create_subscription()
    assert sub["endpoint"].startswith(f"{_origin(cfg)}/wp/")
    assert len(base64.urlsafe_b64decode(sub["keys"]["p256dh"] + "==")) == 65
    assert len(base64.urlsafe_b64decode(sub["keys"]["auth"] + "==")) == 16


def test_pywebpush_send_is_decrypted_and_recorded(ctl, cfg, webpush_session):
    sub = ctl.create_subscription()
    did = str(uuid.uuid4())
    r = send(cfg, webpush_session, sub, {"title": "Hello ☃", "notify_delivery_id": did},
             headers={"Urgency": "high", "Topic": "abc"})
    assert r.status_code == 201
    assert r.headers["Location"].startswith(f"{_origin(cfg)}/m/")
    rec = ctl.wait_for("webpush", lambda x: x["delivery_id"] == did)
    assert rec["accepted"] and rec["status"] == 201
    assert json.loads(rec["extra"]["plaintext"]) == {"title": "Hello ☃",
                                                      "notify_delivery_id": did}
    assert rec["to"] == sub["endpoint"]
    assert rec["extra"]["urgency"] == "high" and rec["extra"]["collapse_id"] == "abc"
    assert rec["extra"]["vapid_claims"]["aud"] == _origin(cfg)


def test_required_headers(ctl, cfg, webpush_session):
    sub = ctl.create_subscription()
    s = webpush_session
    assert raw_push(s, cfg, sub).status_code == 201
    r = raw_push(s, cfg, sub, headers={"TTL": None})
    assert r.status_code == 400 and r.json()["errno"] == 111
    assert raw_push(s, cfg, sub, headers={"TTL": "-5"}).status_code == 400
    assert raw_push(s, cfg, sub, headers={"Urgency": "urgent"}).status_code == 400
    for u in ("very-low", "low", "normal", "high"):
        assert raw_push(s, cfg, sub, headers={"Urgency": u}).status_code == 201
    assert raw_push(s, cfg, sub, headers={"Topic": "a" * 33}).status_code == 400
    assert raw_push(s, cfg, sub, headers={"Topic": "bad topic"}).status_code == 400
    assert raw_push(s, cfg, sub, headers={"Topic": "A-z_9" * 6}).status_code == 201
    assert raw_push(s, cfg, sub, headers={"Content-Encoding": "aesgcm"}).status_code == 400
    assert raw_push(s, cfg, sub, data=None, headers={"Content-Encoding": None}).status_code == 201


def test_vapid_rules(ctl, cfg, webpush_session):
    sub = ctl.create_subscription()
    s = webpush_session
    assert raw_push(s, cfg, sub, auth=None).status_code == 401
    assert raw_push(s, cfg, sub, auth="WebPush abc").status_code == 401
    assert raw_push(s, cfg, sub, auth=vapid_auth(cfg, {"aud": "https://example.com"})) \
        .status_code == 401
    assert raw_push(s, cfg, sub, auth=vapid_auth(cfg, {"exp": int(time.time()) - 10})) \
        .status_code == 401
    assert raw_push(s, cfg, sub, auth=vapid_auth(cfg, {"exp": int(time.time()) + 90000})) \
        .status_code == 401
    assert raw_push(s, cfg, sub, auth=vapid_auth(cfg, drop=("sub",))).status_code == 401
    good = vapid_auth(cfg)
    token, key = good.split("t=")[1].split(", k=")
    tampered = f"vapid t={token[:-4]}AAAA, k={key}"
    assert raw_push(s, cfg, sub, auth=tampered).status_code == 401
    # a valid VAPID signature from another key: the subscription is bound to the sandbox key
    other = ec.generate_private_key(ec.SECP256R1())
    r = raw_push(s, cfg, sub, auth=vapid_auth(cfg, key=other))
    assert r.status_code == 403
    # …which an unrestricted subscription accepts
    free = ctl.create_subscription(application_server_key=None)
    assert raw_push(s, cfg, free, auth=vapid_auth(cfg, key=other)).status_code == 201
    assert all(not x["accepted"] for x in ctl.records("webpush")[:-1])


def test_too_large_unknown_and_dead(ctl, cfg, webpush_session):
    sub = ctl.create_subscription()
    with pytest.raises(WebPushException) as info:
        send(cfg, webpush_session, sub, {"x": "y" * 4100})
    assert info.value.response.status_code == 413
    gone = dict(sub, endpoint=sub["endpoint"].rsplit("/", 1)[0] + "/unknown-id")
    with pytest.raises(WebPushException) as info:
        send(cfg, webpush_session, gone, {"x": 1})
    assert info.value.response.status_code == 404
    ctl.kill_token("webpush", sub["endpoint"])
    with pytest.raises(WebPushException) as info:
        send(cfg, webpush_session, sub, {"x": 1})
    assert info.value.response.status_code == 410
    assert [r["status"] for r in ctl.records("webpush")] == [413, 404, 410]


def test_undecryptable_body_is_accepted_but_not_shown(ctl, cfg, webpush_session):
    sub = ctl.create_subscription()
    other = ctl.create_subscription()
    wrong_keys = dict(other, endpoint=sub["endpoint"])  # encrypted for another browser
    r = send(cfg, webpush_session, wrong_keys, {"x": 1})
    assert r.status_code == 201
    rec = ctl.records("webpush")[-1]
    assert rec["accepted"] and rec["extra"]["plaintext"] is None
    assert rec["extra"]["decrypt_error"]
    assert ctl.inbox("webpush", to=sub["endpoint"]) == []


def test_topic_collapses_in_inbox(ctl, cfg, webpush_session):
    sub = ctl.create_subscription()
    for i in range(3):
        send(cfg, webpush_session, sub, {"n": i}, headers={"Topic": "score"})
    send(cfg, webpush_session, sub, {"n": 99})
    inbox = ctl.inbox("webpush", to=sub["endpoint"])
    assert [json.loads(m["extra"]["plaintext"])["n"] for m in inbox] == [2, 99]
    assert len(inbox[0]["replaced"]) == 2

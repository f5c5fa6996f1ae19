"""FCM v1 emulator driven by google-auth (service_account.Credentials + AuthorizedSession)."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import service_account

from .conftest import FCM_SCOPE, verified_session

TOKEN = "fcm-token-" + "x" * 140


def _error(r):
    err = r.json()["error"]
    codes = [d.get("errorCode") for d in err.get("details", []) if "errorCode" in d]
    return err["code"], err["status"], codes


def test_token_endpoint_and_send(ctl, cfg, ca, fcm_url):
    creds = service_account.Credentials.from_service_account_file(
        cfg["fcm"]["service_account_file"], scopes=[FCM_SCOPE])
    session = AuthorizedSession(creds, auth_request=Request(verified_session(ca)))
    session.verify = ca
    session.trust_env = False
    did = str(uuid.uuid4())
    r = session.post(fcm_url, json={"message": {
        "token": TOKEN, "notification": {"title": "Hi", "body": "there"},
        "data": {"notify_delivery_id": did, "k": "v"},
        "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "ck"}}})
    assert r.status_code == 200, r.text
    name = r.json()["name"]
    assert name.startswith(f"projects/{cfg['fcm']['project_id']}/messages/")
    assert creds.valid and creds.token.startswith("ya29.")
    token_rec = ctl.records("fcm")[0]
    assert token_rec["path"] == "/token" and token_rec["accepted"] is True
    assert token_rec["extra"]["jwt_claims"]["iss"] == creds.service_account_email
    rec = ctl.wait_for("fcm", lambda x: x["delivery_id"] == did)
    assert rec["accepted"] and rec["to"] == TOKEN and rec["response"] == {"name": name}
    assert rec["extra"]["collapse_id"] == "ck"
    assert rec["extra"]["priority"] == "HIGH"
    session.close()


def test_access_token_expires_in(cfg, ca, fcm_credentials):
    info = json.load(open(cfg["fcm"]["service_account_file"]))
    assert info["type"] == "service_account"
    assert info["token_uri"] == f"{cfg['fcm']['url']}/token"
    assert "BEGIN PRIVATE KEY" in info["private_key"]
    now = int(time.time())
    assertion = jwt.encode({"iss": info["client_email"], "aud": info["token_uri"],
                            "scope": FCM_SCOPE, "iat": now, "exp": now + 3600},
                           info["private_key"], algorithm="RS256",
                           headers={"kid": info["private_key_id"]})
    r = verified_session(ca).post(info["token_uri"], data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
    assert r.status_code == 200
    body = r.json()
    assert body["expires_in"] == 3599 and body["token_type"] == "Bearer"


def test_token_endpoint_rejects_bad_grants(ctl, cfg, ca):
    info = json.load(open(cfg["fcm"]["service_account_file"]))
    s = verified_session(ca)
    url = info["token_uri"]
    now = int(time.time())
    claims = {"iss": info["client_email"], "aud": url, "scope": FCM_SCOPE, "iat": now,
              "exp": now + 3600}
    r = s.post(url, data={"grant_type": "password", "assertion": "x"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": info["private_key_id"]})
    r = s.post(url, data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                          "assertion": forged})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    no_scope = jwt.encode({**claims, "scope": "https://www.googleapis.com/auth/drive"},
                          info["private_key"], algorithm="RS256")
    r = s.post(url, data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                          "assertion": no_scope})
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    stale = jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, info["private_key"],
                       algorithm="RS256")
    r = s.post(url, data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                          "assertion": stale})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_google_auth_refresh_error_on_forged_key(cfg, ca, tmp_path, fcm_url):
    info = json.load(open(cfg["fcm"]["service_account_file"]))
    info["private_key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048) \
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                       serialization.NoEncryption()).decode()
    creds = service_account.Credentials.from_service_account_info(info, scopes=[FCM_SCOPE])
    session = AuthorizedSession(creds, auth_request=Request(verified_session(ca)))
    session.trust_env = False
    with pytest.raises(RefreshError):
        session.post(fcm_url, json={"message": {"token": TOKEN}})


def test_unauthenticated_and_wrong_project(ctl, cfg, ca, fcm_url, fcm_session):
    s = verified_session(ca)
    r = s.post(fcm_url, json={"message": {"token": TOKEN}})
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    r = s.post(fcm_url, json={"message": {"token": TOKEN}},
               headers={"authorization": "Bearer ya29.made-up"})
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    other = f"{cfg['fcm']['url']}/v1/projects/someone-else/messages:send"
    r = fcm_session.post(other, json={"message": {"token": TOKEN}})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("message, needle", [
    ({"token": TOKEN, "bogus": 1}, 'Unknown name "bogus"'),
    ({"token": TOKEN, "notification": {"title": "t", "subtitle": "x"}}, 'Unknown name'),
    ({"token": TOKEN, "data": {"n": 1}}, "message.data[0].value"),
    ({"token": TOKEN, "data": {"a": "x", "b": True}}, "message.data[1].value"),
    ({"token": TOKEN, "topic": "news"}, "Exactly one of"),
    ({"data": {"a": "b"}}, "Exactly one of"),
    ({"token": TOKEN, "android": {"priority": "URGENT"}}, "message.android.priority"),
    ({"token": TOKEN, "android": {"ttl": "3600"}}, "message.android.ttl"),
    ({"token": TOKEN, "android": {"ttl": 3600}}, "message.android.ttl"),
    ({"token": TOKEN, "android": {"ttl": "9999999s"}}, "4 weeks"),
    ({"token": TOKEN, "data": {"big": "x" * 4100}}, "too big"),
    ({"topic": "bad topic!"}, "topic"),
])
def test_invalid_messages(ctl, fcm_session, fcm_url, message, needle):
    r = fcm_session.post(fcm_url, json={"message": message})
    assert r.status_code == 400, r.text
    code, status, _ = _error(r)
    assert (code, status) == (400, "INVALID_ARGUMENT")
    assert needle in r.json()["error"]["message"]
    rec = ctl.records("fcm")[-1]
    assert rec["accepted"] is False and rec["status"] == 400


def test_unknown_top_level_field_and_missing_message(ctl, fcm_session, fcm_url):
    r = fcm_session.post(fcm_url, json={"message": {"token": TOKEN}, "extra": 1})
    assert r.status_code == 400
    r = fcm_session.post(fcm_url, json={})
    assert r.status_code == 400
    r = fcm_session.post(fcm_url, data=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_camel_case_names_and_platform_blocks(ctl, fcm_session, fcm_url):
    r = fcm_session.post(fcm_url, json={"message": {
        "token": TOKEN, "android": {"collapseKey": "k", "notification": {"channelId": "c"},
                                    "directBootOk": True},
        "apns": {"headers": {"apns-collapse-id": "a"}, "payload": {"aps": {"badge": 1}}},
        "webpush": {"headers": {"TTL": "60"}, "fcmOptions": {"link": "https://x"}},
        "fcmOptions": {"analyticsLabel": "l"}}})
    assert r.status_code == 200, r.text
    assert ctl.records("fcm")[-1]["extra"]["collapse_id"] == "k"


def test_topic_and_condition_targets(ctl, fcm_session, fcm_url):
    assert fcm_session.post(fcm_url, json={"message": {"topic": "news"}}).status_code == 200
    r = fcm_session.post(fcm_url, json={"message": {"condition": "'a' in topics"}})
    assert r.status_code == 200


def test_validate_only_is_not_delivered(ctl, fcm_session, fcm_url):
    r = fcm_session.post(fcm_url, json={"message": {"token": TOKEN}, "validate_only": True})
    assert r.status_code == 200
    assert r.json()["name"].endswith("/fake_message_id")
    assert ctl.inbox("fcm") == []


def test_dead_token_unregistered(ctl, fcm_session, fcm_url):
    token = "dead-" + "y" * 150
    assert fcm_session.post(fcm_url, json={"message": {"token": token}}).status_code == 200
    ctl.kill_token("fcm", token)
    r = fcm_session.post(fcm_url, json={"message": {"token": token}})
    assert r.status_code == 404
    assert _error(r) == (404, "NOT_FOUND", ["UNREGISTERED"])
    assert r.json()["error"]["details"][0]["@type"] == \
        "type.googleapis.com/google.firebase.fcm.v1.FcmError"
    assert ctl.records("fcm")[-1]["reason"] == "UNREGISTERED"

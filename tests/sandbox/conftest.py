"""Session fixtures: one sandbox (port base ``NOTIFY_TEST_EMULATORS_PORT_BASE``, default 19400;
another base lets two runs share a machine) and the real provider clients pointed at it.

Clients are the libraries the product uses. ``requests``-based ones get ``trust_env = False``
so that a machine-wide ``REQUESTS_CA_BUNDLE`` does not override ``session.verify`` (requests
lets the environment win over the session setting).
"""

from __future__ import annotations

import os
import time
import uuid

import boto3
import httpx
import jwt
import pytest
import requests
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import service_account
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from sandbox.process import start_sandbox

PORT_BASE = int(os.environ.get("NOTIFY_TEST_EMULATORS_PORT_BASE", "19400"))
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"), PORT_BASE, timeout=60)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def cfg(sandbox):
    return sandbox.config


@pytest.fixture(scope="session")
def ca(cfg):
    return cfg["ca_file"]


def verified_session(ca: str) -> requests.Session:
    s = requests.Session()
    s.verify = ca
    s.trust_env = False
    return s


# -- APNs ----------------------------------------------------------------------------------------
def apns_jwt(cfg, *, iat: int | None = None, kid: str | None = None, key: str | None = None,
             iss: str | None = None) -> str:
    a = cfg["apns"]
    return jwt.encode({"iss": iss or a["team_id"], "iat": int(time.time()) if iat is None else iat},
                      key or open(a["key_file"]).read(), algorithm="ES256",
                      headers={"kid": kid or a["key_id"]})


@pytest.fixture(scope="session")
def apns_token(cfg):
    return apns_jwt(cfg)


@pytest.fixture(scope="session")
def apns_client(ca):
    c = httpx.Client(http2=True, verify=ca, timeout=10)
    yield c
    c.close()


@pytest.fixture
def apns_send(cfg, apns_client, apns_token):
    """``apns_send(token=None, payload=None, headers=None, auth=...)`` → httpx.Response."""
    def send(token: str | None = None, payload=None, headers: dict | None = None,
             auth: str | None = "default", content: bytes | None = None):
        token = token if token is not None else uuid.uuid4().hex + uuid.uuid4().hex
        h = {"apns-topic": cfg["apns"]["topic"], "apns-push-type": "alert",
             "apns-id": str(uuid.uuid4())}
        if auth == "default":
            h["authorization"] = f"bearer {apns_token}"
        elif auth is not None:
            h["authorization"] = auth
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        body = content if content is not None else httpx.Request(
            "POST", "http://x", json=payload if payload is not None else
            {"aps": {"alert": {"title": "t", "body": "b"}}}).content
        return apns_client.post(f"{cfg['apns']['url']}/3/device/{token}", content=body,
                                headers=h)
    return send


# -- FCM -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fcm_credentials(cfg):
    return service_account.Credentials.from_service_account_file(
        cfg["fcm"]["service_account_file"], scopes=[FCM_SCOPE])


@pytest.fixture(scope="session")
def fcm_session(fcm_credentials, ca):
    s = AuthorizedSession(fcm_credentials, auth_request=Request(verified_session(ca)))
    s.verify = ca
    s.trust_env = False
    yield s
    s.close()


@pytest.fixture(scope="session")
def fcm_url(cfg):
    return f"{cfg['fcm']['url']}/v1/projects/{cfg['fcm']['project_id']}/messages:send"


# -- Web Push --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def webpush_session(ca):
    s = verified_session(ca)
    yield s
    s.close()


# -- Twilio ----------------------------------------------------------------------------------------
def make_twilio(cfg, ca, sid=None, token=None, account=None) -> Client:
    """A twilio client of the sandbox: HTTP Basic ``sid:token`` (the sandbox account's SID and auth
    token by default; an API key's SID and secret for key auth), URLs naming ``account`` (``sid``
    by default, as the library does)."""
    t = cfg["twilio"]
    http = TwilioHttpClient()
    http.session.verify = ca
    http.session.trust_env = False
    client = Client(sid or t["account_sid"], token or t["auth_token"], account, http_client=http)
    client.api.base_url = t["url"]
    return client


@pytest.fixture(scope="session")
def twilio_client(cfg, ca):
    return make_twilio(cfg, ca)


# -- SES ---------------------------------------------------------------------------------------------
def make_ses(cfg, ca, secret=None, key_id=None, config=None):
    s = cfg["ses"]
    return boto3.client("sesv2", endpoint_url=s["url"], region_name=s["region"],
                        aws_access_key_id=key_id or s["access_key_id"],
                        aws_secret_access_key=secret or s["secret_access_key"], verify=ca,
                        config=config)


@pytest.fixture(scope="session")
def ses_client(cfg, ca):
    return make_ses(cfg, ca)

"""Twilio emulator driven by the twilio library (Client with api.base_url → sandbox)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from channels.sms_segments import segments as segment_count
from channels.sms_segments import sms_info
from sandbox.client import SandboxError

from .conftest import make_twilio

TO = "+14155550123"


class CallbackServer:
    """A tiny local HTTP server that stores each POST (url, headers, form)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                received.append({"path": self.path, "headers": dict(self.headers),
                                 "form": form})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callbacks():
    srv = CallbackServer()
    yield srv
    srv.close()


def test_create_fetch_list(ctl, cfg, twilio_client):
    m = twilio_client.messages.create(to=TO, from_=cfg["twilio"]["from_number"], body="Hello!")
    assert re.fullmatch(r"SM[0-9a-f]{32}", m.sid)
    assert m.status == "queued"
    assert m.num_segments == "1"
    assert m.account_sid == cfg["twilio"]["account_sid"]
    assert m.direction == "outbound-api" and m.to == TO
    assert m.date_created is not None  # RFC 2822 parsed by the library
    rec = ctl.records("twilio")[-1]
    assert rec["accepted"] and rec["status"] == 201 and rec["to"] == TO
    assert rec["body"]["Body"] == "Hello!"
    assert rec["extra"]["segments"] == 1 and rec["extra"]["encoding"] == "GSM-7"
    fetched = twilio_client.messages(m.sid).fetch()
    assert fetched.sid == m.sid and fetched.body == "Hello!"
    listed = twilio_client.messages.list(to=TO, limit=20)
    assert m.sid in [x.sid for x in listed]
    assert all(x.to == TO for x in listed)


def test_messaging_service_and_segments(ctl, cfg, twilio_client):
    body = "안녕하세요 " * 20  # UCS-2: 120 units → 2 segments
    m = twilio_client.messages.create(
        to=TO, messaging_service_sid=cfg["twilio"]["messaging_service_sid"], body=body)
    assert m.status == "accepted" and m.num_segments == "2"
    rec = ctl.records("twilio")[-1]
    assert rec["extra"]["encoding"] == "UCS-2" and rec["extra"]["segments"] == 2


def test_media_only_message_is_one_segment(ctl, cfg, twilio_client):
    """MMS without text: no text segments, but Twilio reports (and bills) one message."""
    m = twilio_client.messages.create(to=TO, from_=cfg["twilio"]["from_number"],
                                      media_url=["https://example.com/cat.png"])
    assert m.num_segments == "1" and m.num_media == "1"
    rec = ctl.records("twilio")[-1]
    assert rec["extra"]["segments"] == 1 and rec["extra"]["units"] == 0


def _code(exc: pytest.ExceptionInfo) -> tuple[int, int]:
    return exc.value.status, exc.value.code


def test_validation_errors(ctl, cfg, twilio_client):
    frm = cfg["twilio"]["from_number"]
    cases = [
        (dict(to="4155550123", from_=frm, body="x"), (400, 21211)),
        (dict(to="+1", from_=frm, body="x"), (400, 21211)),
        (dict(to=TO, body="x"), (400, 21603)),
        (dict(to=TO, from_="+15550000000", body="x"), (400, 21606)),
        (dict(to=TO, messaging_service_sid="MG" + "0" * 32, body="x"), (400, 21701)),
        (dict(to=TO, from_=frm, body=""), (400, 21602)),
        (dict(to=TO, from_=frm, body="x" * 1601), (400, 21617)),
        (dict(to=TO, from_=frm, body="x", status_callback="ftp://x"), (400, 21609)),
        (dict(to="+15005550004", from_=frm, body="x"), (400, 21610)),
        (dict(to="+15005550002", from_=frm, body="x"), (400, 21612)),
    ]
    for kwargs, expected in cases:
        with pytest.raises(TwilioRestException) as exc:
            twilio_client.messages.create(**kwargs)
        assert _code(exc) == expected, kwargs
        assert exc.value.msg
    assert twilio_client.messages.create(to=TO, from_=frm, body="x" * 1600).num_segments == "11"
    recs = ctl.records("twilio")
    assert [r["reason"] for r in recs[:-1]] == [str(c[1][1]) for c in cases]
    assert all(not r["accepted"] for r in recs[:-1])


def test_auth(ctl, cfg, ca):
    bad = make_twilio(cfg, ca, token="0" * 32)
    with pytest.raises(TwilioRestException) as exc:
        bad.messages.create(to=TO, from_=cfg["twilio"]["from_number"], body="x")
    assert _code(exc) == (401, 20003)
    other = make_twilio(cfg, ca, sid="AC" + "1" * 32)
    with pytest.raises(TwilioRestException) as exc:
        other.messages.create(to=TO, from_=cfg["twilio"]["from_number"], body="x")
    assert exc.value.status == 401
    rec = ctl.records("twilio")[-1]
    assert rec["status"] == 401 and rec["response"]["code"] == 20003
    assert rec["response"]["more_info"] == "https://www.twilio.com/docs/errors/20003"


def test_api_key_auth_and_which_credential_each_record_names(ctl, cfg, ca):
    t = cfg["twilio"]
    assert re.fullmatch(r"SK[0-9a-f]{32}", t["api_key_sid"]) and re.fullmatch(r"[0-9A-Za-z]{32}", t["api_key_secret"])
    keyed = make_twilio(cfg, ca, sid=t["api_key_sid"], token=t["api_key_secret"], account=t["account_sid"])
    m = keyed.messages.create(to=TO, from_=t["from_number"], body="with a key")
    assert m.account_sid == t["account_sid"] and keyed.messages(m.sid).fetch().status
    make_twilio(cfg, ca).messages.create(to=TO, from_=t["from_number"], body="with the token")
    recs = ctl.records("twilio")
    assert [(r["method"], r["status"], r["extra"]["auth"], r["extra"]["account_sid"]) for r in recs] == [
        ("POST", 201, f"api_key:{t['api_key_sid']}", t["account_sid"]),
        ("GET", 200, f"api_key:{t['api_key_sid']}", t["account_sid"]),
        ("POST", 201, "auth_token", t["account_sid"])]
    assert t["api_key_secret"] not in str(ctl.accounts())


def test_api_key_refusals_are_twilios_401(ctl, cfg, ca):
    t = cfg["twilio"]
    other = {"account_sid": "AC" + uuid.uuid4().hex, "auth_token": uuid.uuid4().hex,
             "api_key_sid": "SK" + uuid.uuid4().hex, "api_key_secret": uuid.uuid4().hex}
    assert ctl.add_twilio_account(**other)["api_key_sid"] == other["api_key_sid"]
    cases = [
        (t["api_key_sid"], "0" * 32, t["account_sid"]),  # a wrong secret
        (t["api_key_sid"], t["auth_token"], t["account_sid"]),  # the auth token is not the key's secret
        ("SK" + "0" * 32, t["api_key_secret"], t["account_sid"]),  # no such key
        (other["api_key_sid"], other["api_key_secret"], t["account_sid"]),  # another account's key
    ]
    for sid, token, account in cases:
        with pytest.raises(TwilioRestException) as exc:
            make_twilio(cfg, ca, sid=sid, token=token, account=account).messages.create(
                to=TO, from_=t["from_number"], body="x")
        assert _code(exc) == (401, 20003), (sid, account)
    recs = ctl.records("twilio")
    assert [r["response"]["code"] for r in recs] == [20003] * 4
    assert ["auth" in r["extra"] for r in recs] == [False, False, False, True]  # the last key is known: its account's
    assert recs[-1]["extra"]["account_sid"] == other["account_sid"]
    # The registered account's own key, in its own URL, from its sender: accepted.
    own = make_twilio(cfg, ca, sid=other["api_key_sid"], token=other["api_key_secret"], account=other["account_sid"])
    assert own.messages.create(to=TO, from_=t["from_number"], body="x").account_sid == other["account_sid"]
    assert ctl.records("twilio")[-1]["extra"]["auth"] == f"api_key:{other['api_key_sid']}"


@pytest.mark.parametrize("extra, message", [
    ({"api_key_sid": "SK" + "1" * 32}, "go together"),
    ({"api_key_secret": "s"}, "go together"),
    ({"api_key_sid": "AK" + "1" * 32, "api_key_secret": "s"}, "SK and 32"),
    ({"api_key_sid": "own", "api_key_secret": "s"}, "another account's key"),
])
def test_registering_an_account_with_a_bad_api_key_is_refused(ctl, cfg, extra, message):
    if extra.get("api_key_sid") == "own":
        extra = {**extra, "api_key_sid": cfg["twilio"]["api_key_sid"]}  # the sandbox account's key
    with pytest.raises(SandboxError, match=message):
        ctl.add_twilio_account("AC" + uuid.uuid4().hex, uuid.uuid4().hex, **extra)


def test_status_callbacks_are_signed(ctl, cfg, twilio_client, callbacks):
    did = str(uuid.uuid4())
    url = f"{callbacks.base}/twilio/status?delivery_id={did}"
    m = twilio_client.messages.create(to=TO, from_=cfg["twilio"]["from_number"], body="cb",
                                      status_callback=url)
    got = callbacks.wait(2)
    assert [c["form"]["MessageStatus"] for c in got] == ["sent", "delivered"]
    validator = RequestValidator(cfg["twilio"]["auth_token"])
    for c in got:
        assert c["path"] == f"/twilio/status?delivery_id={did}"
        form = c["form"]
        assert form["MessageSid"] == m.sid and form["To"] == TO
        assert form["AccountSid"] == cfg["twilio"]["account_sid"]
        assert form["From"] == cfg["twilio"]["from_number"]
        assert validator.validate(url, form, c["headers"]["X-Twilio-Signature"])
        assert not validator.validate(url + "x", form, c["headers"]["X-Twilio-Signature"])
    assert twilio_client.messages(m.sid).fetch().status == "delivered"
    rec = [r for r in ctl.records("twilio") if r["method"] == "POST"][-1]
    assert rec["delivery_id"] == did and rec["extra"]["sid"] == m.sid
    assert ctl.twilio_messages()["callbacks"][-1]["status"] == 204


def test_callback_status_fault_ends_undelivered(ctl, cfg, twilio_client, callbacks):
    ctl.add_fault(provider="twilio", callback_status="undelivered", error_code=30003, count=1)
    m = twilio_client.messages.create(to=TO, from_=cfg["twilio"]["from_number"], body="x",
                                      status_callback=f"{callbacks.base}/s")
    assert m.status == "queued"
    got = callbacks.wait(2)
    assert [c["form"]["MessageStatus"] for c in got] == ["sent", "undelivered"]
    assert got[1]["form"]["ErrorCode"] == "30003"
    assert twilio_client.messages(m.sid).fetch().error_code == 30003
    assert ctl.inbox("twilio") == []


def test_inbound_stop_opts_out(ctl, cfg, twilio_client, callbacks):
    number = "+14155550999"
    url = f"{callbacks.base}/twilio/inbound"
    result = ctl.twilio_inbound(number, "STOP", url)
    assert result["opted_out"] is True and result["status"] == 204
    form = callbacks.wait(1)[0]["form"]
    assert form["Body"] == "STOP" and form["From"] == number and form["OptOutType"] == "STOP"
    assert RequestValidator(cfg["twilio"]["auth_token"]).validate(
        url, form, callbacks.received[0]["headers"]["X-Twilio-Signature"])
    with pytest.raises(TwilioRestException) as exc:
        twilio_client.messages.create(to=number, from_=cfg["twilio"]["from_number"], body="x")
    assert _code(exc) == (400, 21610)
    ctl.twilio_inbound(number, "START", url)
    assert twilio_client.messages.create(to=number, from_=cfg["twilio"]["from_number"],
                                         body="x").status == "queued"


@pytest.mark.parametrize("body, encoding, segments", [
    ("", "GSM-7", 0),             # no text; the Twilio emulator still reports 1 for MMS
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("a" * 153 * 2, "GSM-7", 2),
    ("a" * 307, "GSM-7", 3),
    ("€" * 80, "GSM-7", 1),       # extension chars count 2 septets
    ("€" * 81, "GSM-7", 2),
    ("\f" * 80 + "^", "GSM-7", 2),  # form feed is an extension char too
    ("a" * 152 + "€" + "a" * 10, "GSM-7", 2),   # the escape pair is not split
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 3),  # 152 | 2+151 | 1: would be 2 if split
    ("é" * 160, "GSM-7", 1),      # é is in the GSM-7 basic table
    ("ê" * 70, "UCS-2", 1),
    ("ê" * 71, "UCS-2", 2),
    ("가" * 70, "UCS-2", 1),
    ("가" * 71, "UCS-2", 2),
    ("😀" * 35, "UCS-2", 1),       # emoji are 2 UTF-16 units
    ("😀" * 36, "UCS-2", 2),
    ("a" * 66 + "😀" * 3, "UCS-2", 2),       # 72 units; the surrogate pair is not split
    ("가" * 66 + "😀" + "가" * 66, "UCS-2", 3),  # 66 | 2+65 | 1: would be 2 if split
    ("한" * 134, "UCS-2", 2),
    ("한" * 135, "UCS-2", 3),
])
def test_segments(body, encoding, segments):
    info = sms_info(body)
    assert (info["encoding"], info["segments"]) == (encoding, segments)
    assert segment_count(body) == (segments, encoding)  # the product's name, same counter


@pytest.mark.parametrize("body, expected", [
    ("", {"encoding": "GSM-7", "segments": 0, "units": 0, "characters": 0}),
    ("Hi €", {"encoding": "GSM-7", "segments": 1, "units": 5, "characters": 4}),
    ("😀" * 36, {"encoding": "UCS-2", "segments": 2, "units": 72, "characters": 36}),
])
def test_sms_info_shape(body, expected):
    assert sms_info(body) == expected


def test_sms_segments_is_stdlib_only():
    """The sandbox imports the product's counter: it must not pull in Django, notify or any
    third-party package."""
    code = ("import sys; before = set(sys.modules); import channels.sms_segments; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(sorted(new - set(sys.stdlib_module_names) - {'channels'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

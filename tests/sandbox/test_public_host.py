"""``--host`` / ``--public-host`` / ``--callback-hosts``: a second sandbox (port base 19450) that
advertises ``localhost`` and allows Twilio callbacks to one extra host.

Its directory is pre-seeded with a CA and a server certificate lacking the ``localhost`` SAN, so
the start must re-issue the server certificate with the same CA. All traffic stays on
127.0.0.1 / localhost: the non-allowed callback hosts are refused before any connection (or DNS
look-up) is attempted.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sandbox import certs
from sandbox.process import start_sandbox
from sandbox.twilio_api import TwilioApp

from .conftest import make_twilio, verified_session
from .test_twilio import TO, CallbackServer

PORT_BASE = 19450
PUBLIC_HOST = "localhost"
CALLBACK_HOSTS = "api,Callbacks.Example.test"
REFUSED_PREFIX = "only loopback and --callback-hosts (api, callbacks.example.test)"


def _sans(cert_file: Path) -> list:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def _seed_without_localhost(directory: Path) -> bytes:
    """A CA plus a server certificate whose only SAN is 127.0.0.1; returns ca.pem's bytes."""
    files = certs.ensure_tls(directory)
    ca_pem = files.ca_file.read_bytes()
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    cert, key = certs._new_server_cert(
        ca_cert, ca_key, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    certs._write_server(files, cert, key, ca_pem)
    assert not any(isinstance(s, x509.DNSName) for s in _sans(files.cert_file))
    return ca_pem


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sandbox-public")
    ca_before = _seed_without_localhost(directory)
    handle = start_sandbox(
        directory, PORT_BASE, timeout=60,
        extra_args=["--host", "127.0.0.1", "--public-host", PUBLIC_HOST,
                    "--callback-hosts", CALLBACK_HOSTS])
    handle.ca_before = ca_before
    yield handle
    handle.stop()


@pytest.fixture
def pctl(public):
    c = public.control
    c.clear_faults()
    c.clear()
    return c


def _in_memory_handshake(cert_file: Path, key_file: Path, ca_file: Path, hostname: str) -> None:
    """TLS handshake between two in-memory SSL objects (no socket): the client verifies the
    server certificate against ``ca_file`` for ``hostname``. Raises ``ssl.SSLError`` if not."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            data = out.read()
            if data:
                peer_in.write(data)
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


# -- sandbox.json / sandbox.env --------------------------------------------------------------------
def test_sandbox_json_uses_public_host(public):
    cfg = public.config
    p = PORT_BASE
    assert cfg["control_url"] == f"http://localhost:{p}"
    assert cfg["apns"]["url"] == f"https://localhost:{p + 1}"
    assert cfg["fcm"]["url"] == f"https://localhost:{p + 2}"
    assert cfg["webpush"]["url"] == f"https://localhost:{p + 3}"
    assert cfg["twilio"]["url"] == f"https://localhost:{p + 4}"
    assert cfg["ses"]["url"] == f"https://localhost:{p + 5}"
    assert (cfg["smtp"]["host"], cfg["smtp"]["port"]) == ("localhost", p + 6)
    sa = json.loads(Path(cfg["fcm"]["service_account_file"]).read_text())
    assert sa["token_uri"] == f"https://localhost:{p + 2}/token"
    env = public.env
    assert env["NOTIFY_APNS_URL"] == cfg["apns"]["url"]
    assert env["AWS_ENDPOINT_URL_SESV2"] == cfg["ses"]["url"]
    assert env["NOTIFY_SMTP_HOST"] == "localhost"
    assert env["NOTIFY_SANDBOX_CONTROL_URL"] == f"http://localhost:{p}"
    assert public.control.config() == cfg
    assert not any("127.0.0.1" in v for v in env.values())


def test_webpush_endpoint_uses_public_host(public, pctl):
    sub = pctl.create_subscription()
    assert sub["endpoint"].startswith(f"https://localhost:{PORT_BASE + 3}/wp/")


# -- certificate -----------------------------------------------------------------------------------
def test_server_cert_reissued_with_public_host_san_and_same_ca(public):
    d = public.dir
    assert (d / "ca.pem").read_bytes() == public.ca_before
    sans = _sans(d / "server.pem")
    assert x509.DNSName("localhost") in sans
    assert x509.IPAddress(ipaddress.ip_address("127.0.0.1")) in sans  # the old SANs are kept


def test_tls_verifies_for_localhost_with_ca(public):
    ca = public.config["ca_file"]
    ctx = ssl.create_default_context(cafile=ca)
    for port in (PORT_BASE + 2, PORT_BASE + 3, PORT_BASE + 4, PORT_BASE + 5):
        with socket.create_connection(("localhost", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                peer = tls.getpeercert()
        assert ("DNS", "localhost") in peer["subjectAltName"]


def test_httpx_https_localhost_verifies_against_ca(public, pctl):
    cfg = public.config
    with httpx.Client(verify=cfg["ca_file"], timeout=10) as client:
        sub = pctl.create_subscription()
        r = client.post(sub["endpoint"], content=b"")  # no VAPID: a push-service answer, over TLS
        assert r.status_code == 401
        assert urlsplit(str(r.url)).hostname == "localhost"
        r = client.post(f"{cfg['fcm']['url']}/token", data={"grant_type": "x"})
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    with httpx.Client(http2=True, verify=cfg["ca_file"], timeout=10) as client:
        r = client.post(f"{cfg['apns']['url']}/3/device/{'a' * 64}", json={"aps": {}})
        assert r.http_version == "HTTP/2" and r.status_code == 403  # no provider token
    recs = pctl.records("webpush")
    assert recs and recs[-1]["status"] == 401


def test_fcm_token_uri_on_public_host_works(public):
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    cfg = public.config
    creds = service_account.Credentials.from_service_account_file(
        cfg["fcm"]["service_account_file"],
        scopes=["https://www.googleapis.com/auth/firebase.messaging"])
    session = verified_session(cfg["ca_file"])
    try:
        creds.refresh(Request(session))
    finally:
        session.close()
    assert creds.token


def test_twilio_api_on_public_host(public, pctl):
    cfg = public.config
    client = make_twilio(cfg, cfg["ca_file"])
    m = client.messages.create(to=TO, from_=cfg["twilio"]["from_number"], body="hi")
    assert m.sid.startswith("SM")


# -- ensure_tls unit behaviour ---------------------------------------------------------------------
def test_ensure_tls_default_reuses_files_untouched(tmp_path):
    files = certs.ensure_tls(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    certs.ensure_tls(tmp_path)
    certs.ensure_tls(tmp_path, "127.0.0.1")
    certs.ensure_tls(tmp_path, "localhost")  # already a SAN
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert _sans(files.cert_file) == [
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1"))]


@pytest.mark.parametrize("host, san", [
    ("sandbox", x509.DNSName("sandbox")),
    ("Sandbox.Internal", x509.DNSName("sandbox.internal")),
    ("10.9.8.7", x509.IPAddress(ipaddress.ip_address("10.9.8.7"))),
    ("[fd00::5]", x509.IPAddress(ipaddress.ip_address("fd00::5"))),
])
def test_ensure_tls_adds_public_host_san_keeping_ca(tmp_path, host, san):
    files = certs.ensure_tls(tmp_path)
    ca = files.ca_file.read_bytes()
    ca_key = (tmp_path / "ca-key.pem").read_bytes()
    old_cert = files.cert_file.read_bytes()
    certs.ensure_tls(tmp_path, host)
    assert files.ca_file.read_bytes() == ca and (tmp_path / "ca-key.pem").read_bytes() == ca_key
    assert files.cert_file.read_bytes() != old_cert
    sans = _sans(files.cert_file)
    assert sans[-1] == san and x509.DNSName("localhost") in sans
    new_cert = files.cert_file.read_bytes()
    certs.ensure_tls(tmp_path, host)  # now present: untouched
    assert files.cert_file.read_bytes() == new_cert
    if isinstance(san, x509.DNSName):
        _in_memory_handshake(files.cert_file, files.key_file, files.ca_file, san.value)
    _in_memory_handshake(files.cert_file, files.key_file, files.ca_file, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        _in_memory_handshake(files.cert_file, files.key_file, files.ca_file, "other.example")


# -- Twilio callback allowlist ---------------------------------------------------------------------
def _callback_entries(ctl, sid: str, n: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = [c for c in ctl.twilio_messages()["callbacks"] if c["sid"] == sid]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def test_status_callback_to_non_allowed_host_is_refused(public, pctl):
    cfg = public.config
    client = make_twilio(cfg, cfg["ca_file"])
    did = str(uuid.uuid4())
    url = f"http://not-allowed.example.test:8000/twilio/status?delivery_id={did}"
    m = client.messages.create(to=TO, from_=cfg["twilio"]["from_number"], body="x",
                               status_callback=url)
    got = _callback_entries(pctl, m.sid, 2)
    assert [c["params"]["MessageStatus"] for c in got] == ["sent", "delivered"]
    for c in got:
        assert c["url"] == url and c["status"] is None
        assert c["error"].startswith(REFUSED_PREFIX)
    assert client.messages(m.sid).fetch().status == "delivered"


def test_inbound_to_non_allowed_host_is_refused(public, pctl):
    for url in ("http://apix:8000/in", "http://api.evil.example/in", "https://10.0.0.1/in"):
        entry = pctl.twilio_inbound("+14155550199", "hello", url)
        assert entry["status"] is None and entry["error"].startswith(REFUSED_PREFIX), url


def test_loopback_callbacks_still_work_with_allowlist(public, pctl):
    srv = CallbackServer()
    try:
        cfg = public.config
        client = make_twilio(cfg, cfg["ca_file"])
        m = client.messages.create(to=TO, from_=cfg["twilio"]["from_number"], body="x",
                                   status_callback=f"{srv.base}/s")
        got = srv.wait(2)
        assert [c["form"]["MessageStatus"] for c in got] == ["sent", "delivered"]
        entries = _callback_entries(pctl, m.sid, 2)
        assert [e["status"] for e in entries] == [204, 204]
        assert all(e["error"] is None for e in entries)
    finally:
        srv.close()


def test_default_sandbox_refuses_non_loopback_callbacks(ctl):
    entry = ctl.twilio_inbound("+14155550198", "hello", "http://api:8000/in")
    assert entry["status"] is None
    assert entry["error"] == "only loopback callback URLs are called by the sandbox"


@pytest.mark.parametrize("url, allowed", [
    ("http://api:8000/twilio/status", True),
    ("https://API/twilio/status?x=1", True),
    ("http://callbacks.example.test/x", True),
    ("http://127.0.0.1:5000/x", True),
    ("http://localhost/x", True),
    ("http://[::1]:80/x", True),
    ("http://apix/x", False),
    ("http://api.evil.example/x", False),
    ("http://evil.example/api", False),
    ("http://user@evil.example/x", False),
    ("http://api@evil.example/x", False),
    ("not a url", False),
])
def test_callback_allowlist_rule(url, allowed):
    app = TwilioApp.__new__(TwilioApp)  # only the rule, no server
    app.state = SimpleNamespace(callback_hosts=frozenset({"api", "callbacks.example.test"}))
    assert app._callback_allowed(url) is allowed
    with pytest.raises(ValueError):  # unparsable URL: same error as before the allowlist
        app._callback_allowed("http://[bad/x")


def test_callback_allowlist_empty_is_loopback_only():
    app = TwilioApp.__new__(TwilioApp)
    app.state = SimpleNamespace(callback_hosts=frozenset())
    assert app._callback_allowed("http://127.0.0.1:1/x")
    assert not app._callback_allowed("http://api:8000/x")

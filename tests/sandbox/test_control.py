"""Control API, sandbox.json / sandbox.env, record files, inbox collapse, restart reuse."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.client import SandboxControl, SandboxError
from sandbox.process import start_sandbox

from .conftest import PORT_BASE

ENV_NAMES = """NOTIFY_PROVIDER_CA_FILE NOTIFY_APNS_URL NOTIFY_APNS_KEY_FILE NOTIFY_APNS_KEY_ID
NOTIFY_APNS_TEAM_ID NOTIFY_APNS_TOPIC NOTIFY_FCM_URL NOTIFY_FCM_SERVICE_ACCOUNT_FILE
NOTIFY_FCM_PROJECT_ID NOTIFY_VAPID_PRIVATE_KEY_FILE NOTIFY_VAPID_PUBLIC_KEY NOTIFY_VAPID_SUBJECT
NOTIFY_TWILIO_URL NOTIFY_TWILIO_ACCOUNT_SID NOTIFY_TWILIO_AUTH_TOKEN NOTIFY_TWILIO_API_KEY_SID
NOTIFY_TWILIO_API_KEY_SECRET NOTIFY_TWILIO_FROM NOTIFY_TWILIO_MESSAGING_SERVICE_SID AWS_ENDPOINT_URL_SESV2 NOTIFY_SES_REGION
NOTIFY_SES_ACCESS_KEY_ID NOTIFY_SES_SECRET_ACCESS_KEY NOTIFY_SES_FROM NOTIFY_SMTP_HOST
NOTIFY_SMTP_PORT NOTIFY_SANDBOX_CONTROL_URL""".split()


def test_sandbox_json_shape(sandbox, cfg):
    p = PORT_BASE
    assert cfg["control_url"] == f"http://127.0.0.1:{p}"
    assert cfg["apns"]["url"] == f"https://127.0.0.1:{p + 1}"
    assert cfg["fcm"]["url"] == f"https://127.0.0.1:{p + 2}"
    assert cfg["webpush"]["url"] == f"https://127.0.0.1:{p + 3}"
    assert cfg["twilio"]["url"] == f"https://127.0.0.1:{p + 4}"
    assert cfg["ses"]["url"] == f"https://127.0.0.1:{p + 5}"
    assert (cfg["smtp"]["host"], cfg["smtp"]["port"], cfg["smtp"]["tls"]) == ("127.0.0.1", p + 6, "starttls")
    a = cfg["apns"]
    assert re.fullmatch(r"[A-Z0-9]{10}", a["key_id"]) and re.fullmatch(r"[A-Z0-9]{10}",
                                                                         a["team_id"])
    assert Path(a["key_file"]).name == f"apns_AuthKey_{a['key_id']}.p8"
    key = serialization.load_pem_private_key(Path(a["key_file"]).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    t = cfg["twilio"]
    assert re.fullmatch(r"AC[0-9a-f]{32}", t["account_sid"])
    assert re.fullmatch(r"[0-9a-f]{32}", t["auth_token"])
    assert re.fullmatch(r"SK[0-9a-f]{32}", t["api_key_sid"]) and re.fullmatch(r"[0-9A-Za-z]{32}", t["api_key_secret"])
    assert re.fullmatch(r"MG[0-9a-f]{32}", t["messaging_service_sid"])
    assert t["from_number"] == "+15005550006"
    sa = json.loads(Path(cfg["fcm"]["service_account_file"]).read_text())
    for k in ("type", "project_id", "private_key_id", "private_key", "client_email",
              "token_uri", "client_id"):
        assert sa[k]
    assert sa["project_id"] == cfg["fcm"]["project_id"]
    assert cfg["webpush"]["vapid_subject"].startswith("mailto:")
    assert Path(cfg["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_sandbox_env_sets_every_provider_setting_the_adapters_read_from_sandbox_json(sandbox, cfg):
    """``set -a; . sandbox.env`` points the product at the sandbox: each adapter setting that has a
    sandbox.json path (channels.base.Setting.sandbox) is in sandbox.env under its variable, with the
    same value."""
    from channels import registry
    from channels.webpush import private_endpoints

    env = sandbox.env
    for cls in registry.providers().values():
        for setting in cls.settings:
            if not setting.sandbox:
                continue
            value = cfg
            for part in setting.sandbox.split("."):
                value = value[part]
            assert setting.env in env, setting
            if setting.key == "private_endpoints":  # host:port in the environment, a URL in sandbox.json
                assert private_endpoints(env[setting.env]) == private_endpoints(value)
            else:
                assert env[setting.env] == str(value), setting
    assert set(ENV_NAMES) <= set(env)
    assert env["NOTIFY_APNS_URL"] == cfg["apns"]["url"]
    assert env["AWS_ENDPOINT_URL_SESV2"] == cfg["ses"]["url"]
    assert env["NOTIFY_SMTP_PORT"] == str(cfg["smtp"]["port"])
    assert env["NOTIFY_TWILIO_FROM"] == cfg["twilio"]["from_number"]
    assert env["NOTIFY_SANDBOX_CONTROL_URL"] == cfg["control_url"]


def test_health_and_config(ctl, cfg):
    assert ctl.health() is True
    assert ctl.config() == cfg
    assert SandboxControl("http://127.0.0.1:1").health() is False


def test_records_filters_and_files(ctl, sandbox, apns_send):
    start = ctl.last_seq()
    did = str(uuid.uuid4())
    apns_send("ab" * 32, headers={"apns-id": did})
    apns_send("zz")
    page = ctl.records_page("apns", since=start)
    assert [r["accepted"] for r in page["records"]] == [True, False]
    assert page["last_seq"] == page["records"][-1]["seq"]
    seqs = [r["seq"] for r in page["records"]]
    assert seqs == sorted(seqs) and seqs[0] > start
    assert [r["delivery_id"] for r in ctl.records("apns", accepted=True)] == [did]
    assert len(ctl.records("apns", accepted=False)) == 1
    assert ctl.records("apns", since=seqs[0])[0]["seq"] == seqs[1]
    assert ctl.records(delivery_id=did)[0]["seq"] == seqs[0]
    assert ctl.records("fcm") == []
    with pytest.raises(SandboxError):
        ctl.records("pigeon")
    time.sleep(0.5)  # records are flushed every 200 ms
    lines = (sandbox.dir / "records" / "apns.jsonl").read_text().splitlines()
    on_disk = {json.loads(x)["seq"]: json.loads(x) for x in lines}
    assert on_disk[seqs[0]]["delivery_id"] == did and on_disk[seqs[1]]["status"] == 400
    ctl.clear()
    assert ctl.records() == []
    apns_send("ab" * 32)
    assert ctl.records()[0]["seq"] > seqs[1]  # seq keeps counting


def test_every_record_has_contract_keys(ctl, apns_send):
    apns_send("ab" * 32)
    keys = {"seq", "provider", "time", "method", "path", "http_version", "headers", "body",
            "status", "response", "accepted", "reason", "delivery_id", "to", "extra"}
    assert set(ctl.records()[0]) == keys


def test_apns_inbox_collapses_per_token(ctl, apns_send):
    t1, t2 = "a1" * 32, "a2" * 32
    ids = [str(uuid.uuid4()) for _ in range(5)]
    apns_send(t1, headers={"apns-id": ids[0], "apns-collapse-id": "score"})
    apns_send(t1, headers={"apns-id": ids[1], "apns-collapse-id": "score"})
    apns_send(t2, headers={"apns-id": ids[2], "apns-collapse-id": "score"})
    apns_send(t1, headers={"apns-id": ids[3]})
    apns_send(t1, headers={"apns-id": ids[4]})
    apns_send("zz")  # rejected: never shown
    assert [m["delivery_id"] for m in ctl.inbox("apns", to=t1)] == [ids[1], ids[3], ids[4]]
    assert [m["delivery_id"] for m in ctl.inbox("apns", to=t2)] == [ids[2]]
    assert len(ctl.inbox("apns")) == 4
    assert ctl.inbox("apns", to=t1)[0]["replaced"] == [ctl.records(delivery_id=ids[0])[0]["seq"]]


def test_fcm_inbox_collapse_key(ctl, fcm_session, fcm_url):
    token = "c" * 120
    for i, ck in enumerate(["k", "k", None, "apns"]):
        msg = {"token": token, "data": {"notify_delivery_id": f"d{i}"}}
        if ck == "apns":
            msg["apns"] = {"headers": {"apns-collapse-id": "k2"}}
        elif ck:
            msg["android"] = {"collapse_key": ck}
        assert fcm_session.post(fcm_url, json={"message": msg}).status_code == 200
    assert [m["delivery_id"] for m in ctl.inbox("fcm", to=token)] == ["d1", "d2", "d3"]


def test_sms_and_email_show_every_message(ctl, cfg, twilio_client):
    for _ in range(3):
        twilio_client.messages.create(to="+14155550111", from_=cfg["twilio"]["from_number"],
                                      body="same")
    assert len(ctl.inbox("twilio", to="+14155550111")) == 3


def test_dead_token_api(ctl, sandbox):
    with pytest.raises(SandboxError):
        ctl.kill_token("pigeon", "x")
    sub = ctl.create_subscription()
    out = ctl.kill_token("webpush", sub["endpoint"])
    assert out["token"] == sub["endpoint"].rsplit("/", 1)[1]
    assert isinstance(out["dead_since"], int)


def test_restart_reuses_credentials(sandbox, tmp_path):
    """A second start in the same directory reuses keys and ids; token_uri follows the port."""
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(sandbox.dir, d, ignore=shutil.ignore_patterns("records", "*.log"))
    before = json.loads((d / "sandbox.json").read_text())
    handle = start_sandbox(d, PORT_BASE + 20, timeout=60)
    try:
        after = handle.config
        assert after["apns"]["key_id"] == before["apns"]["key_id"]
        assert Path(after["apns"]["key_file"]).read_bytes() == \
            Path(before["apns"]["key_file"].replace(str(sandbox.dir), str(d))).read_bytes()
        assert after["twilio"]["auth_token"] == before["twilio"]["auth_token"]
        assert after["twilio"]["api_key_secret"] == before["twilio"]["api_key_secret"]
        assert after["webpush"]["vapid_public_key"] == before["webpush"]["vapid_public_key"]
        sa = json.loads(Path(after["fcm"]["service_account_file"]).read_text())
        assert sa["token_uri"] == f"https://127.0.0.1:{PORT_BASE + 22}/token"
        assert handle.control.health()
    finally:
        assert handle.stop() == 0

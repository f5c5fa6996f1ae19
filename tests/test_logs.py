"""Structured logs through the whole stack: JSON lines from the API, the relay and the workers;
one notification followed by its id from accept to each provider's answer; no phone number,
email address or device token in any log of the run (the providers' error answers quote them,
and are logged masked); no per-second lines from the scheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from devtools import demo
from tests.test_e2e import register, wait_final
from notify.models import REACHED_PROVIDER

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

PHONE, EMAIL = "+821012345678", "jiwoo.kim@example.com"


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("logs")[1]


def json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_one_notification_is_followed_by_its_id_and_no_address_is_logged(stack, key, control):
    devices = register(stack, key, control, "kim", phone=PHONE, email=EMAIL)
    # Providers that refuse and quote the address in their answer, as Twilio and SES do.
    control.add_fault(provider="twilio", status=400, code=21211, count=1,
                      message=f"The 'To' number {PHONE} is not a valid phone number.")
    control.add_fault(provider="ses", status=400, reason="MessageRejected", count=1,
                      message=f"Email address is not verified. The following identities failed the check: {EMAIL}")
    started = time.monotonic()
    status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
        "recipient": "kim", "template": "order-shipped", "data": {"name": "지우", "order": "A-1"}})
    assert status == 202, accepted
    final = {d["id"]: d for d in wait_final(stack, key, accepted["id"])["deliveries"]}
    assert {d["channel"]: d["status"] for d in final.values()} == {
        "apns": "sent", "fcm": "sent", "webpush": "sent", "sms": "failed", "email": "failed"}
    time.sleep(max(0.0, 6 - (time.monotonic() - started)))  # a few of the scheduler's seconds

    log_dir = Path(settings.VAR_DIR) / "test-log" / __name__.rsplit(".", 1)[-1]
    logs = {path.name: path for path in log_dir.glob("*.log")}
    # Accept: one line on the API naming the notification and each delivery.
    accepts = [line for line in json_lines(logs["api.log"]) if line.get("notification_id") == accepted["id"]]
    assert len(accepts) == 1 and accepts[0]["message"] == "notification accepted" and accepts[0]["level"] == "INFO"
    assert {d["delivery_id"] for d in accepts[0]["deliveries"]} == set(final)
    # Each provider's answer: one INFO line per delivery outcome in its channel's worker log.
    for delivery_id, delivery in final.items():
        lines = [line for line in json_lines(logs[f"worker-{delivery['channel']}.log"])
                 if line.get("delivery_id") == delivery_id]
        assert len(lines) == 1, lines
        line = lines[0]
        assert line["level"] == "INFO" and line["logger"] == "notify.send"
        assert (line["notification_id"], line["channel"], line["attempt"], line["outcome"]) == (
            accepted["id"], delivery["channel"], 1, delivery["status"])
        assert line["provider"] == {"apns": "apns", "fcm": "fcm", "webpush": "webpush", "sms": "twilio",
                                    "email": "ses"}[delivery["channel"]]
        if delivery["status"] in REACHED_PROVIDER:
            assert line["provider_message_id"] and line["accept_to_sent_s"] > 0
        else:
            assert line["provider_status"] == 400 and line["answer"]
    sms_answer = next(line["answer"] for path in (logs["worker-sms.log"],) for line in json_lines(path)
                      if line.get("notification_id") == accepted["id"])
    assert "+**********78" in sms_answer  # the number was in the answer, masked
    email_answer = next(line["answer"] for line in json_lines(logs["worker-email.log"])
                        if line.get("notification_id") == accepted["id"])
    assert "j***@example.com" in email_answer

    # Nothing personal anywhere, in any process's log (also not URL-encoded).
    secrets_ = [PHONE, PHONE[1:], PHONE.replace("+", "%2B"), EMAIL, EMAIL.replace("@", "%40"),
                devices["ios"]["token"], devices["android"]["token"],
                devices["web"]["subscription"]["endpoint"].rsplit("/", 1)[-1]]
    assert len(logs) >= 8
    for name, path in logs.items():
        text = path.read_text(errors="replace")
        for secret in secrets_:
            assert secret not in text, f"{secret!r} in {name}"
    # The API, the relay and the workers write JSON lines.
    for name in ("api.log", "relay.log", "worker-sms.log", "maintenance.log"):
        assert json_lines(logs[name]), name
    # The scheduler sends the dispatcher every second; none of that is logged at INFO.
    maintenance = logs["maintenance.log"].read_text()
    assert "Sending due task" not in maintenance and "dispatch_due" not in maintenance.split("[tasks]")[-1].split(
        "\n\n", 1)[-1]
    assert len(json_lines(logs["maintenance.log"])) < 10


def test_the_configured_log_pipeline_masks_messages_extras_and_tracebacks(tmp_path):
    """settings.LOGGING itself, in a process of its own: message arguments, extra fields
    (nested too) and a traceback's text are masked; ids stay readable."""
    code = (
        "import logging\n"
        "log = logging.getLogger('notify.check')\n"
        "log.warning('sms to %s failed', '+821012345678', extra={'delivery_id': '0b4c3b0e-5a1f-4c6e-9f1a-2b3c4d5e6f70',"
        " 'to': '+821012345678', 'detail': {'email': 'jiwoo.kim@example.com', 'note': 'mail jiwoo.kim@example.com'}})\n"
        "try:\n"
        "    raise ValueError('bad token ' + 'a1' * 32)\n"
        "except ValueError:\n"
        "    log.exception('failed for jiwoo.kim@example.com')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test", "NOTIFY_LOG_FORMAT": "json"}
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=settings.BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert len(lines) == 2, result.stderr
    first, second = lines
    assert first["message"] == "sms to +**********78 failed"
    assert first["to"] == "***" and first["detail"] == {"email": "***", "note": "mail j***@example.com"}
    assert first["delivery_id"] == "0b4c3b0e-5a1f-4c6e-9f1a-2b3c4d5e6f70"
    assert second["message"] == "failed for j***@example.com"
    assert "ValueError: bad token ***a1a1" in second["exc_info"]
    for secret in ("821012345678", "jiwoo.kim@", "a1" * 32):
        assert secret not in result.stderr

"""No notification lost, none sent twice: idempotency, crash safety, retries, dead tokens, dead
letters and provider-specific failure handling, against the real services and the sandbox."""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import signal
import subprocess
import time

import pytest

from devtools import demo
from notify import deadletters
from notify.models import REACHED_PROVIDER, Delivery, DeliveryLog, Device, Notification, Preference
from tests.conftest import wait_until
from tests.test_e2e import register, wait_final

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

STACK_ENV = {
    "NOTIFY_WEBPUSH_MAX_ATTEMPTS": "3",
    "NOTIFY_APNS_MAX_ATTEMPTS": "50",
    "NOTIFY_EMAIL_MAX_ATTEMPTS": "5",
    **{f"NOTIFY_{c}_BACKOFF_MAX": "2" for c in ("APNS", "FCM", "WEBPUSH", "SMS", "EMAIL")},
    # A push service that is down (nothing listens there), for the per-origin breaker test, beside
    # the sandbox's (a variable that is set replaces the sandbox's default).
    "NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS":
        f"127.0.0.1:19699,127.0.0.1:{int(os.environ['NOTIFY_TEST_SANDBOX_PORT_BASE']) + 3}",
}


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("reliability")[1]


def post(stack, key, body, idem=None):
    return demo.call(stack.api_url, key, "POST", "/api/v1/notifications", body,
                     headers={"Idempotency-Key": idem} if idem else None)


def delivery(notification_id, channel) -> Delivery:
    return Delivery.objects.get(notification_id=notification_id, channel=channel)


def pool_children(stack, channel) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(stack.procs[f"worker-{channel}"].pid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def kill_pool(stack, channel) -> int:
    """SIGKILL every process of a channel's pool (the pool's parent forks replacements)."""
    pids = pool_children(stack, channel)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


PUSH = {"push": {"title": "안녕하세요 👋", "body": "Hello"}}


# --- idempotency ------------------------------------------------------------------------------

def test_same_idempotency_key_twice_returns_the_first_answer_and_sends_once(stack, key, control):
    register(stack, key, control, "idem", platforms=("ios",))
    body = {"recipient": "idem", "content": PUSH, "channels": ["apns"]}
    s1, first = post(stack, key, body, "evt-1")
    s2, second = post(stack, key, body, "evt-1")
    assert (s1, s2) == (202, 202) and first == second
    assert Notification.objects.filter(idempotency_key="evt-1").count() == 1
    wait_final(stack, key, first["id"])
    d = first["deliveries"][0]["id"]
    assert len([r for r in control.records("apns", accepted=True) if r["delivery_id"] == d]) == 1
    assert DeliveryLog.objects.filter(delivery_id=d, to_status="sending").count() == 1


def test_same_idempotency_key_concurrently_creates_one_notification(stack, key, control):
    register(stack, key, control, "race", platforms=("ios",))
    body = {"recipient": "race", "content": PUSH, "channels": ["apns"]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(stack, key, body, "evt-race"), range(8)))
    assert {status for status, _ in answers} == {202}
    assert all(answer == answers[0][1] for _, answer in answers)
    assert Notification.objects.filter(idempotency_key="evt-race").count() == 1
    wait_final(stack, key, answers[0][1]["id"])
    d = answers[0][1]["deliveries"][0]["id"]
    assert len([r for r in control.records("apns", accepted=True) if r["delivery_id"] == d]) == 1


def test_same_idempotency_key_with_another_body_is_409(stack, key, control):
    register(stack, key, control, "idem2", platforms=("ios",))
    assert post(stack, key, {"recipient": "idem2", "content": PUSH}, "evt-2")[0] == 202
    status, body = post(stack, key, {"recipient": "idem2", "content": {"push": {"title": "other"}}}, "evt-2")
    assert status == 409 and body["error"]["code"] == "idempotency_key_reused"
    assert Notification.objects.filter(idempotency_key="evt-2").count() == 1


# --- provider failures ------------------------------------------------------------------------

def test_provider_503_after_accepting_is_retried_and_the_user_sees_one_message(stack, key, control):
    devices = register(stack, key, control, "after", platforms=("ios",))
    token = devices["ios"]["token"]
    control.add_fault(provider="apns", status=503, reason="ServiceUnavailable", after_accept=True, count=1, to=token)
    status, accepted = post(stack, key, {"recipient": "after", "content": PUSH})
    final = wait_final(stack, key, accepted["id"])
    assert final["deliveries"][0]["status"] in REACHED_PROVIDER and final["deliveries"][0]["attempts"] == 2
    d = final["deliveries"][0]["id"]
    wire = [r for r in control.records("apns", accepted=True) if r["delivery_id"] == d]
    assert len(wire) == 2 and {r["headers"]["apns-collapse-id"] for r in wire} == {d}
    assert len(control.inbox("apns", to=token)) == 1


def test_worker_killed_mid_send_is_taken_over_and_the_user_sees_one_message(stack, key, control):
    devices = register(stack, key, control, "crash", platforms=("ios",))
    token = devices["ios"]["token"]
    control.add_fault(provider="apns", latency_ms=2500, count=1, to=token)
    _, accepted = post(stack, key, {"recipient": "crash", "content": PUSH})
    d = accepted["deliveries"][0]["id"]
    wait_until(lambda: Delivery.objects.get(id=d).status == "sending", message="the claim")
    time.sleep(0.5)
    assert kill_pool(stack, "apns") >= 1
    final = wait_final(stack, key, accepted["id"], timeout=40)
    assert final["deliveries"][0]["status"] in REACHED_PROVIDER
    reasons = list(DeliveryLog.objects.filter(delivery_id=d).values_list("reason", flat=True))
    assert "lease_expired" in reasons
    assert len(control.inbox("apns", to=token)) == 1


def test_a_task_that_kills_its_worker_every_time_ends_dead_lettered(stack, key, control):
    register(stack, key, control, "poison", platforms=("web",))
    control.add_fault(provider="webpush", latency_ms=2500)
    before = deadletters.queue_depths()["webpush"]
    _, accepted = post(stack, key, {"recipient": "poison", "content": PUSH})
    d = accepted["deliveries"][0]["id"]
    seen = 0

    def next_claim_or_dead():
        row = Delivery.objects.get(id=d)
        return row if (row.status == "sending" and row.attempts > seen) or row.status == "dead_lettered" else None

    for _ in range(10):
        row = wait_until(next_claim_or_dead, timeout=20, interval=0.05, message="the next claim")
        if row.status == "dead_lettered":
            break
        seen = row.attempts
        time.sleep(0.3)
        assert kill_pool(stack, "webpush") >= 1
    row = Delivery.objects.get(id=d)
    assert row.reason == "max_attempts" and row.attempts == 4
    assert wait_until(lambda: deadletters.queue_depths()["webpush"] == before + 1, timeout=5, message="dead letter")
    # A killed client does not stop the push service from delivering what it already received;
    # every copy carries the same Topic, so the browser shows at most one.
    endpoint = Delivery.objects.get(id=d).address
    assert len(control.inbox("webpush", to=endpoint)) <= 1


def test_dead_letter_replay_sends_once_and_never_resends_a_sent_delivery(stack, key, control):
    register(stack, key, control, "replay", platforms=("web",))
    control.add_fault(provider="webpush", status=503, count=3)
    _, accepted = post(stack, key, {"recipient": "replay", "content": PUSH})
    d = accepted["deliveries"][0]["id"]
    wait_until(lambda: Delivery.objects.get(id=d).status == "dead_lettered", timeout=30, message="dead letter")
    assert Delivery.objects.get(id=d).reason.startswith("retries_exhausted")
    assert deadletters.replay([d]) == 1
    wait_until(lambda: Delivery.objects.get(id=d).status == "sent", timeout=20, message="the replayed send")
    assert deadletters.replay([d]) == 0
    time.sleep(1.5)
    assert len([r for r in control.records("webpush", accepted=True) if r["delivery_id"] == d]) == 1


def test_retry_longer_than_rabbitmq_consumer_timeout_does_not_hold_the_message(stack, key, control):
    register(stack, key, control, "slow-retry", platforms=())
    subprocess.run(["rabbitmqctl", "eval", "application:set_env(rabbit, consumer_timeout, 3000)."], check=True,
                   capture_output=True)
    try:
        stack.stop_worker("email")
        stack.start_worker("email")
        control.add_fault(provider="ses", status=503, reason="ServiceUnavailable", retry_after=6, count=1)
        _, accepted = post(stack, key, {"recipient": "slow-retry", "content": {"email": {"subject": "s", "text": "t"}}})
        d = accepted["deliveries"][0]["id"]
        wait_until(lambda: Delivery.objects.get(id=d).status == "sent", timeout=30, message="the delayed retry")
        row = Delivery.objects.get(id=d)
        assert row.attempts == 2
        retry = DeliveryLog.objects.get(delivery_id=d, to_status="retrying")
        sent = DeliveryLog.objects.get(delivery_id=d, to_status="sent")
        assert (sent.at - retry.at).total_seconds() >= 5.5
        assert stack.procs["worker-email"].poll() is None
        log = (stack.config.log_dir / "worker-email.log").read_text()
        assert "PRECONDITION_FAILED" not in log and "consumer ack timed out" not in log
        assert len([r for r in control.records("ses", accepted=True) if r["delivery_id"] == d]) == 1
    finally:
        subprocess.run(["rabbitmqctl", "eval", "application:set_env(rabbit, consumer_timeout, 1800000)."],
                       capture_output=True)
        stack.stop_worker("email")
        stack.start_worker("email")


def test_ses_throttling_is_retried_and_message_rejected_fails_at_once(stack, key, control):
    register(stack, key, control, "ses", platforms=())
    control.add_fault(provider="ses", status=429, reason="TooManyRequestsException", count=2)
    _, throttled = post(stack, key, {"recipient": "ses", "content": {"email": {"subject": "1", "text": "t"}}})
    final = wait_final(stack, key, throttled["id"])
    assert (final["deliveries"][0]["status"], final["deliveries"][0]["attempts"]) == ("sent", 3)
    control.add_fault(provider="ses", status=400, reason="MessageRejected", count=1)
    _, rejected = post(stack, key, {"recipient": "ses", "content": {"email": {"subject": "2", "text": "t"}}})
    final = wait_final(stack, key, rejected["id"])
    d = final["deliveries"][0]
    assert (d["status"], d["attempts"]) == ("failed", 1)
    assert Delivery.objects.get(id=d["id"]).reason == "MessageRejected"


def test_one_dead_token_of_three_deactivates_only_that_device(stack, key, control):
    register(stack, key, control, "three", platforms=())
    tokens = [secrets.token_hex(32) for _ in range(3)]
    for token in tokens:
        assert demo.call(stack.api_url, key, "POST", "/api/v1/recipients/three/devices",
                         {"platform": "ios", "token": token})[0] == 201
    control.kill_token("apns", tokens[1])
    _, first = post(stack, key, {"recipient": "three", "content": PUSH})
    final = wait_final(stack, key, first["id"])
    outcome = {d["to"]: d["status"] for d in final["deliveries"]}
    assert outcome == {tokens[0]: "sent", tokens[1]: "failed", tokens[2]: "sent"}
    assert Delivery.objects.get(notification_id=first["id"], address=tokens[1]).reason == "Unregistered"
    assert dict(Device.objects.filter(token__in=tokens).values_list("token", "active")) == {
        tokens[0]: True, tokens[1]: False, tokens[2]: True}
    _, second = post(stack, key, {"recipient": "three", "content": PUSH})
    assert sorted(d["to"] for d in second["deliveries"]) == sorted([tokens[0], tokens[2]])


def test_expired_notification_is_not_sent_even_out_of_a_retry(stack, key, control):
    register(stack, key, control, "ttl", platforms=("ios",))
    control.add_fault(provider="apns", status=503, retry_after=3, count=1)
    _, accepted = post(stack, key, {"recipient": "ttl", "content": PUSH, "ttl": 2})
    final = wait_final(stack, key, accepted["id"])
    d = final["deliveries"][0]
    assert d["status"] == "expired" and d["attempts"] == 2
    assert not [r for r in control.records("apns", accepted=True) if r["delivery_id"] == d["id"]]


# --- SMS opt-out paths --------------------------------------------------------------------------

def test_twilio_21610_turns_into_an_sms_opt_out(stack, key, control):
    register(stack, key, control, "stopped", phone="+14155550199", platforms=())
    control.add_fault(provider="twilio", status=400, code=21610, to="+14155550199", count=1)
    _, first = post(stack, key, {"recipient": "stopped", "content": {"sms": {"body": "hi"}}})
    final = wait_final(stack, key, first["id"])
    assert (final["deliveries"][0]["status"], final["deliveries"][0]["attempts"]) == ("failed", 1)
    assert Preference.objects.get(recipient__external_id="stopped", channel="sms").enabled is False
    _, second = post(stack, key, {"recipient": "stopped", "content": {"sms": {"body": "hi again"}}})
    assert second["deliveries"][0]["reason"] == "opted_out"


def test_inbound_stop_keyword_opts_out_and_start_opts_back_in(stack, key, control):
    register(stack, key, control, "keyword", phone="+447911123499", platforms=())
    url = f"{stack.api_url}/webhooks/twilio/inbound"
    control.twilio_inbound("+447911123499", "STOP", url)
    assert wait_until(lambda: Preference.objects.filter(recipient__external_id="keyword", channel="sms",
                                                        enabled=False).exists(), timeout=5, message="opt-out")
    control.twilio_inbound("+447911123499", "START", url)
    assert wait_until(lambda: Preference.objects.filter(recipient__external_id="keyword", channel="sms",
                                                        enabled=True).exists(), timeout=5, message="opt-in")


def test_sms_provider_500_after_accepting_fails_visibly_instead_of_sending_twice(stack, key, control):
    register(stack, key, control, "sms500", phone="+821055554444", platforms=())
    control.add_fault(provider="twilio", status=500, after_accept=True, count=1, to="+821055554444")
    _, accepted = post(stack, key, {"recipient": "sms500", "content": {"sms": {"body": "한 번만"}}})
    final = wait_final(stack, key, accepted["id"])
    d = final["deliveries"][0]
    assert (d["status"], d["attempts"]) == ("failed", 1)
    assert Delivery.objects.get(id=d["id"]).reason.startswith("outcome_unknown")
    assert len(control.inbox("twilio", to="+821055554444")) == 1


def test_a_dead_web_push_service_does_not_hold_back_the_others(stack, key, control):
    from tests.helpers import browser_subscription

    register(stack, key, control, "dead-push", platforms=())
    status, _ = demo.call(stack.api_url, key, "POST", "/api/v1/recipients/dead-push/devices",
                          {"platform": "web", "subscription": browser_subscription("https://127.0.0.1:19699/wp/gone")})
    assert status == 201
    dead = [post(stack, key, {"recipient": "dead-push", "content": PUSH})[1]["id"] for _ in range(25)]
    wait_until(lambda: DeliveryLog.objects.filter(delivery__notification_id__in=dead, reason="circuit_open").exists(),
               timeout=30, message="the dead push service's breaker to trip")
    register(stack, key, control, "live-push", platforms=("web",))
    _, live = post(stack, key, {"recipient": "live-push", "content": PUSH})
    final = wait_final(stack, key, live["id"], timeout=10)
    assert final["deliveries"][0]["status"] in REACHED_PROVIDER
    assert not DeliveryLog.objects.filter(delivery__notification_id=live["id"], reason="circuit_open").exists()

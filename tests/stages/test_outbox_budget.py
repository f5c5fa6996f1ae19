"""A worker hands the rest of its batch back when the task's time budget is spent
(``NOTIFY_TASK_BUDGET``, notify.tasks), end to end on the real stack.

A module of its own because STACK_ENV applies to every test of a module: here the budget is 0,
so every task sends its first wave (one delivery: the concurrency is 1 here) and hands the rest
back to the outbox, and the relay publishes them again; a batch of N deliveries takes N tasks,
one after the other.
"""

from __future__ import annotations

import re

import pytest

from devtools import demo
from notify.models import REACHED_PROVIDER, Delivery, DeliveryLog
from tests.test_e2e import register, wait_final

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

STACK_ENV = {
    "NOTIFY_TASK_BUDGET": "0",
    # hand_back logs nothing itself; the task's result ({"sent": 1, "handed_back": n}) is in the
    # worker log once Celery's per-task lines are on (notify.celery keeps them at WARNING).
    "NOTIFY_TASK_LOG_LEVEL": "INFO",
    # The budget is checked between a batch's waves (notify.send.send_batch), and a wave is as
    # large as the channel's send concurrency: one send per wave keeps the chain below.
    "NOTIFY_SEND_CONCURRENCY": "twilio=1,ses=1",
}

N = 4


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("budget")[1]


def _handed_back(stack, channel: str) -> list[int]:
    log = (stack.config.log_dir / f"worker-{channel}.log").read_text(errors="replace")
    # One per line: a JSON log line repeats the task's result in its "data".
    return sorted(int(n) for n in re.findall(r"^.*?'handed_back': (\d+)", log, re.MULTILINE))


def test_a_batch_over_its_time_budget_is_handed_back_and_every_delivery_is_sent_once(stack, key, control):
    register(stack, key, control, "budget", platforms=())
    items = [{"recipient": "budget", "event_id": f"budget-{i}",
              "content": {"sms": {"body": f"Code {i}"}, "email": {"subject": f"#{i}", "text": "Hello"}}}
             for i in range(N)]
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications/batch", {"notifications": items})
    assert status == 202, body
    for notification in body["notifications"]:
        final = wait_final(stack, key, notification["id"])
        assert {d["status"] for d in final["deliveries"]} <= REACHED_PROVIDER, final

    for channel, provider in (("sms", "twilio"), ("email", "ses")):
        ids = [d["id"] for n in body["notifications"] for d in n["deliveries"] if d["channel"] == channel]
        assert len(ids) == N
        # Exactly once on the provider's wire, and claimed once: handing back never doubles a send.
        wire = [r["delivery_id"] for r in control.records(provider, accepted=True)]
        assert sorted(wire) == sorted(ids), (channel, wire)
        for delivery_id in ids:
            assert DeliveryLog.objects.filter(delivery_id=delivery_id, to_status="sending").count() == 1
        # The batch went out in one relay round (one transaction, one NOTIFY), so without a hand-back
        # all N would share one published_at; each hand-back is published in a round of its own.
        published = Delivery.objects.filter(id__in=ids).values_list("published_at", flat=True)
        assert len(set(published)) == N, (channel, sorted(published))
        # The chain the workers reported: N-1 handed back, then N-2, ... then 1.
        assert _handed_back(stack, channel) == list(range(1, N)), channel

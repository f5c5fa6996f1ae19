"""The analytics kept by the stack itself: the maintenance worker's beat runs the rollup (every
second here), so sends through the whole stack (API, relay, workers, the provider sandbox and
its Twilio status callbacks) show up in GET /api/v1/analytics with nobody calling the rollup,
each counted once."""

from __future__ import annotations

import pytest

from devtools import demo
from notify.models import Delivery, DeliveryEvent, DeliveryLog
from tests.conftest import wait_until
from tests.test_e2e import register, wait_final

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

STACK_ENV = {"NOTIFY_ANALYTICS_INTERVAL": "1", "NOTIFY_ANALYTICS_LAG": "0"}
CONTENT = {"sms": {"body": "analytics"}, "email": {"subject": "analytics", "text": "analytics"}}


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("analytics-stack")[1]


def test_beat_rolls_up_what_the_stack_sends(stack, key, control):
    register(stack, key, control, "ana", phone="+821055512399", email="ana@example.com", platforms=())
    ids = []
    for _ in range(3):
        status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                 {"recipient": "ana", "channels": ["sms", "email"], "content": CONTENT})
        assert status == 202, body
        ids.append(body["id"])
    for notification_id in ids:
        wait_final(stack, key, notification_id)
    deliveries = Delivery.objects.filter(notification_id__in=ids)
    sent = DeliveryLog.objects.filter(delivery__in=deliveries, to_status="sent").count()
    assert sent == 6
    # Twilio's callbacks arrive on their own: wait for the three "delivered" before comparing.
    wait_until(lambda: DeliveryEvent.objects.filter(delivery__in=deliveries, kind="delivered").count() == 3,
               timeout=30, message="the sandbox's delivery receipts")

    def counted():
        status, body = demo.call(stack.api_url, key, "GET", "/api/v1/analytics?group_by=channel")
        assert status == 200, body
        by_channel = {row["channel"]: row["counts"] for row in body["rows"]}
        ready = by_channel.get("sms", {}).get("delivered") == 3 and by_channel.get("email", {}).get("sent") == 3
        return by_channel if ready else None

    by_channel = wait_until(counted, timeout=30, message="beat's rollup to count the run")
    assert set(by_channel) == {"sms", "email"}
    assert {m: n for m, n in by_channel["sms"].items() if n} == {"accepted": 3, "sent": 3, "delivered": 3}
    # Email's own receipts depend on the provider's event publishing, which this stack leaves off.
    assert (by_channel["email"]["accepted"], by_channel["email"]["sent"], by_channel["email"]["failed"]) == (3, 3, 0)

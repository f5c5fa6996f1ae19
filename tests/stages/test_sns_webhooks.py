"""SES events over SNS (notify.webhooks.sns) in process: messages signed with this directory's
sandbox SNS key, trusted through the settings, reach the view through Django's test client, and
the store decides what they change."""

from __future__ import annotations

import json

import pytest

from notify import store
from notify.models import Delivery, DeliveryEvent
from tests import sns_support as sns

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = "/webhooks/ses/events"


@pytest.fixture
def trusted(settings, provider_sandbox):
    """The settings trust this sandbox's SNS stand-in (as its sandbox.env says)."""
    env = provider_sandbox.env
    settings.NOTIFY_SNS_TOPIC_ARNS = [env["NOTIFY_SNS_TOPIC_ARNS"]]
    settings.NOTIFY_SNS_CERT_HOST_PATTERN = env["NOTIFY_SNS_CERT_HOST_PATTERN"]
    settings.NOTIFY_SNS_CA_FILE = env["NOTIFY_SNS_CA_FILE"]


@pytest.fixture
def email_delivery(api, ctl, trusted) -> str:
    """An email delivery accepted and not yet sent."""
    api.put("/api/v1/recipients/reader", {"email": "reader@example.org"}, format="json")
    r = api.post("/api/v1/notifications", {"recipient": "reader", "content": {"email": {"subject": "s", "text": "t"}}},
                 format="json")
    return r.json()["deliveries"][0]["id"]


def delivery_record(delivery_id: str, message_id: str) -> dict:
    now = sns.sns_timestamp()
    return {"eventType": "Delivery", "delivery": {"timestamp": now, "recipients": ["reader@example.org"]},
            "mail": {"timestamp": now, "messageId": message_id, "destination": ["reader@example.org"],
                     "tags": {"delivery_id": [delivery_id]}}}


def post(client, message: dict, path: str = EVENTS, **headers):
    """POST as SNS does: JSON as text/plain and the type header (``headers`` may replace it)."""
    headers = {"HTTP_X_AMZ_SNS_MESSAGE_TYPE": message.get("Type", ""), **headers}
    return client.post(path, json.dumps(message), content_type="text/plain; charset=UTF-8", **headers)


def test_an_event_that_beats_the_workers_outcome_is_adopted_by_it(client, ctl, email_delivery):
    """SES may publish Delivery before the worker has stored SES's MessageId: the event is kept
    (the delivery carries no message id yet) and the outcome takes it."""
    claimed = store.claim(email_delivery)
    answer = post(client, sns.ses_notification(ctl, delivery_record(email_delivery, "ses-message-1")))
    assert answer.status_code == 204, answer.content
    assert Delivery.objects.get(id=email_delivery).status == "sending"  # left to the worker
    assert store.record_outcome(email_delivery, claimed["attempts"], "sent", "", provider="ses",
                                provider_message_id="ses-message-1")
    assert Delivery.objects.get(id=email_delivery).status == "delivered"


def test_an_event_about_another_ses_message_changes_nothing(client, ctl, email_delivery):
    claimed = store.claim(email_delivery)
    store.record_outcome(email_delivery, claimed["attempts"], "sent", "", provider="ses",
                         provider_message_id="ses-message-2")
    answer = post(client, sns.ses_notification(ctl, delivery_record(email_delivery, "ses-message-of-another-send")))
    assert answer.status_code == 204
    assert not DeliveryEvent.objects.exists()
    assert Delivery.objects.get(id=email_delivery).status == "sent"


def test_a_failed_confirmation_is_503_and_its_retry_is_not_taken_for_a_duplicate(client, ctl, trusted):
    config = ctl.config()["sns"]
    message = sns.sign({"Type": "SubscriptionConfirmation", "MessageId": "confirm-1", "Token": "0" * 128,
                        "TopicArn": config["topic_arn"], "Message": "confirm",
                        "SubscribeURL": f"{config['url']}/?Action=ConfirmSubscription&Token={'0' * 128}",
                        "Timestamp": sns.sns_timestamp(), "SigningCertURL": config["signing_cert_url"]},
                       sns.signing_key(ctl), "1")
    for _ in range(2):  # the sandbox refuses the unknown token: not confirmed, SNS must retry
        answer = post(client, message)
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, "sns_unavailable")


def test_an_unreachable_signing_certificate_is_503(client, ctl, email_delivery):
    gone = ctl.config()["sns"]["signing_cert_url"].replace(".pem", "0.pem")
    message = sns.ses_notification(ctl, delivery_record(email_delivery, "ses-message-3"), SigningCertURL=gone)
    answer = post(client, message)
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "sns_unavailable")
    assert not DeliveryEvent.objects.exists()


def test_what_is_no_sns_message_is_400(client, trusted):
    answer = client.post(EVENTS, "not json", content_type="text/plain")
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_json")
    answer = post(client, {"Type": "Notification"}, HTTP_X_AMZ_SNS_MESSAGE_TYPE="SubscriptionConfirmation")
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_message")
    answer = post(client, {"Type": "Notification", "Message": "x"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_message")


def test_a_notification_that_is_no_ses_record_changes_nothing(client, ctl, email_delivery):
    doc = sns.ses_notification(ctl, {"hello": "world"})
    assert post(client, doc).status_code == 204
    assert not DeliveryEvent.objects.exists()


def test_a_large_ses_event_is_taken_where_other_bodies_of_its_size_are_413(client, api, ctl, email_delivery, settings):
    """SES may carry the mail's headers in an event, and an SNS message may be up to 256 KiB:
    such a message, well over NOTIFY_MAX_BODY_BYTES, is verified and recorded, while a body of
    the same size anywhere else is 413 ``body_too_large``."""
    claimed = store.claim(email_delivery)
    store.record_outcome(email_delivery, claimed["attempts"], "sent", "", provider="ses",
                         provider_message_id="ses-message-large")
    record = delivery_record(email_delivery, "ses-message-large")
    record["mail"]["headers"] = [{"name": f"X-Header-{i}", "value": "v" * 1000} for i in range(200)]
    message = sns.ses_notification(ctl, record)
    size = len(json.dumps(message))
    assert 200_000 < size and size > settings.NOTIFY_MAX_BODY_BYTES
    answer = post(client, message)
    assert answer.status_code == 204, answer.content[:300]
    assert Delivery.objects.get(id=email_delivery).status == "delivered"
    elsewhere = api.generic("PUT", "/api/v1/recipients/reader", json.dumps({"email": "x" * size}).encode(),
                            content_type="application/json")
    assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (413, "body_too_large")

"""SES events over an SNS HTTP subscription, end to end: the whole stack (API under gunicorn,
relay, workers) sends email through the sandbox's SES, which publishes the mail's events to its
SNS stand-in, which POSTs them signed to ``/webhooks/ses/events``. The stack trusts the stand-in
by configuration only (tests.sns_support.trust_env). Forged, foreign and stale messages are
signed here with the stand-in's key and must change nothing."""

from __future__ import annotations

import ssl
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools import demo
from notify.models import AddressSuppression, Delivery, Preference
from tests import sns_support as sns
from tests.conftest import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

STACK_ENV = sns.trust_env()
EVENTS = "/webhooks/ses/events"


@pytest.fixture(scope="module")
def subscription(stack):
    """The stack's events URL subscribed to the sandbox topic (confirmed by the stack itself)."""
    return sns.subscribe(stack, EVENTS)


@pytest.fixture
def key(stack, transactional_db, subscription):
    return demo.create_app("ses-events")[1]


def delivered(stack, key, address: str | None = None) -> tuple[str, Delivery]:
    """A recipient and an email to them that SES delivered (its events recorded)."""
    user = sns.new_recipient(stack, key, address or sns.simulator("success"))
    delivery = sns.send_email(stack, key, user)
    return user, sns.wait_status(delivery["id"], "delivered")


def test_the_subscription_is_confirmed_by_the_stack(subscription, control):
    assert subscription["confirmation"]["status"] == 204, subscription["confirmation"]
    assert subscription["status"] == "confirmed"
    assert [s["status"] for s in control.sns_subscriptions() if s["arn"] == subscription["arn"]] == ["confirmed"]


def test_an_email_through_ses_ends_delivered_by_its_events(stack, key, control):
    _, row = delivered(stack, key)
    sent = control.records("ses", delivery_id=str(row.id), accepted=True)[0]
    assert sent["body"]["EmailTags"] == [{"Name": "delivery_id", "Value": str(row.id)}]
    assert sns.events(str(row.id)) == {"sent": "", "delivered": ""}
    _, body = demo.call(stack.api_url, key, "GET", f"/api/v1/notifications/{row.notification_id}")
    assert [e["kind"] for e in body["deliveries"][0]["events"]] == ["sent", "delivered"]


def test_a_hard_bounce_opts_the_address_out_for_the_app_and_the_next_email_is_suppressed(stack, key):
    address = sns.simulator("bounce")
    user = sns.new_recipient(stack, key, address)
    twin = sns.new_recipient(stack, key, address.upper())  # same mailbox, another recipient of the app
    other_key = demo.create_app("ses-events-other")[1]
    stranger = sns.new_recipient(stack, other_key, address)  # same address, another app
    bounced = sns.wait_status(sns.send_email(stack, key, user)["id"], "bounced")
    assert sns.events(str(bounced.id))["bounced"] == "Permanent:General"
    # The address is suppressed for this app (not a preference of the person), whoever holds it.
    assert list(AddressSuppression.objects.values_list("app__name", "channel", "address", "reason")) == [
        ("ses-events", "email", address.lower(), "hard_bounce")]
    assert not Preference.objects.filter(recipient__external_id__in=[user, twin, stranger]).exists()
    for who in (user, twin):
        following = sns.send_email(stack, key, who)
        assert (following["status"], following["reason"]) == ("suppressed", "hard_bounce")
    assert sns.send_email(stack, other_key, stranger)["status"] == "queued"


def test_a_soft_bounce_changes_neither_the_delivery_nor_the_preferences(stack, key, control):
    user, row = delivered(stack, key)
    answer = control.ses_event("Bounce", delivery_id=str(row.id), bounce_type="Transient")
    assert [d["status"] for d in answer["deliveries"]] == [204]
    row.refresh_from_db()
    assert row.status == "delivered" and "bounced" not in sns.events(str(row.id))
    assert not Preference.objects.filter(recipient__external_id=user).exists()
    assert not AddressSuppression.objects.exists()
    assert sns.send_email(stack, key, user)["status"] == "queued"


def test_a_complaint_opts_the_address_out(stack, key):
    user = sns.new_recipient(stack, key, sns.simulator("complaint"))
    row = sns.wait_status(sns.send_email(stack, key, user)["id"], "complained")
    assert set(sns.events(str(row.id))) == {"sent", "delivered", "complained"}
    assert sns.events(str(row.id))["complained"] == "abuse"
    following = sns.send_email(stack, key, user)
    assert (following["status"], following["reason"]) == ("suppressed", "complaint")


def test_a_duplicate_sns_delivery_is_recorded_once(stack, key, control):
    _, row = delivered(stack, key)
    answer = control.ses_event("Open", delivery_id=str(row.id), repeat=2)
    assert [(d["status"], d["response"]) for d in answer["deliveries"]] == [(204, ""), (200, '{"duplicate": true}')]
    assert sns.events(str(row.id))["opened"] == ""
    control.ses_event("Click", delivery_id=str(row.id), link="https://example.com/offer")
    row.refresh_from_db()
    assert row.status == "clicked" and sns.events(str(row.id))["clicked"] == "https://example.com/offer"


@pytest.mark.parametrize(("event_type", "options", "status", "kind", "reason"), [
    ("Bounce", {"bounce_type": "Undetermined"}, "bounced", "bounced", "Undetermined:Undetermined"),
    ("Reject", {"reason": "Bad content"}, "undelivered", "undelivered", "Reject:Bad content"),
    ("Rendering Failure", {}, "undelivered", "undelivered", "RenderingFailure"),
    ("DeliveryDelay", {}, "delivered", None, None),
])
def test_other_ses_events(stack, key, control, event_type, options, status, kind, reason):
    user, row = delivered(stack, key)
    answer = control.ses_event(event_type, delivery_id=str(row.id), **options)
    assert [d["status"] for d in answer["deliveries"]] == [204]
    row.refresh_from_db()
    assert row.status == status
    recorded = sns.events(str(row.id))
    assert (recorded.get(kind) if kind else set(recorded)) == (reason if kind else {"sent", "delivered"})
    assert not Preference.objects.filter(recipient__external_id=user).exists()
    assert not AddressSuppression.objects.exists()


def test_the_older_notification_format_is_matched_by_the_delivery_id_header(stack, key, control):
    user, row = delivered(stack, key)
    answer = control.ses_event("Complaint", delivery_id=str(row.id), format="notification")
    assert [d["status"] for d in answer["deliveries"]] == [204]
    assert "notificationType" in answer["deliveries"][0]["message"]["Message"]
    assert sns.wait_status(str(row.id), "complained")
    assert AddressSuppression.objects.get(app__name="ses-events").reason == "complaint"


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_verify(stack, key, control, version):
    _, row = delivered(stack, key)
    record = sns.bounce_record(str(row.id), row.provider_message_id, row.address, "Undetermined")
    extra = {"Subject": "Amazon SES Email Event Notification"} if version == "2" else {}
    answer = sns.post_sns(stack, EVENTS, sns.ses_notification(control, record, version=version, **extra))
    assert answer.status_code == 204, answer.text
    assert sns.events(str(row.id))["bounced"] == "Undetermined:General"


def forged(control, record: dict, how: str) -> dict:
    """A signed-looking Notification that must be refused, spoilt as ``how`` says."""
    if how == "bad signature":
        message = sns.ses_notification(control, record)
        return {**message, "Message": message["Message"].replace("Permanent", "Transient")}
    if how == "another key":
        return sns.ses_notification(control, record, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    if how == "unknown signature version":
        return {**sns.ses_notification(control, record), "SignatureVersion": "3"}
    cert_url = control.config()["sns"]["signing_cert_url"]
    fields = {
        "foreign certificate host": {"SigningCertURL": "https://sns.example.com/SimpleNotificationService-0.pem"},
        "certificate over http": {"SigningCertURL": cert_url.replace("https://", "http://")},
        "user info in the certificate URL": {"SigningCertURL": cert_url.replace("https://", "https://x@")},
        "old timestamp": {"Timestamp": sns.hours_ago(1.5)},
        "unknown topic": {"TopicArn": "arn:aws:sns:us-east-1:123456789012:someone-else"},
    }[how]
    return sns.ses_notification(control, record, **fields)


@pytest.mark.parametrize(("how", "code"), [
    ("bad signature", "invalid_signature"),
    ("another key", "invalid_signature"),
    ("unknown signature version", "invalid_signature"),
    ("foreign certificate host", "untrusted_url"),
    ("certificate over http", "untrusted_url"),
    ("user info in the certificate URL", "untrusted_url"),
    ("old timestamp", "stale_message"),
    ("unknown topic", "unknown_topic"),
])
def test_a_message_that_does_not_prove_it_comes_from_sns_is_403_and_changes_nothing(stack, key, control, how, code):
    user, row = delivered(stack, key)
    record = sns.bounce_record(str(row.id), row.provider_message_id, row.address)
    answer = sns.post_sns(stack, EVENTS, forged(control, record, how))
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == code
    row.refresh_from_db()
    assert row.status == "delivered" and set(sns.events(str(row.id))) == {"sent", "delivered"}
    assert not Preference.objects.filter(recipient__external_id=user).exists()
    assert not AddressSuppression.objects.exists()


def test_a_confirmation_whose_subscribe_url_is_not_sns_is_403(stack, control):
    sns_doc = control.config()["sns"]
    message = sns.sign({"Type": "SubscriptionConfirmation", "MessageId": "m-1", "Token": "t" * 64,
                        "TopicArn": sns_doc["topic_arn"], "Message": "confirm",
                        "SubscribeURL": "https://attacker.example.net/?Action=ConfirmSubscription&Token=x",
                        "Timestamp": sns.sns_timestamp(), "SigningCertURL": sns_doc["signing_cert_url"]},
                       sns.signing_key(control), "2")
    answer = sns.post_sns(stack, EVENTS, message)
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "untrusted_url")


def test_an_unsubscribe_confirmation_is_acknowledged(stack, control):
    second = sns.subscribe(stack, EVENTS + "?copy=1")
    assert second["status"] == "confirmed"
    config = control.config()
    unsubscribe = f"{config['sns']['url']}/?Action=Unsubscribe&SubscriptionArn={quote(second['arn'], safe='')}"
    assert httpx.get(unsubscribe, verify=ssl.create_default_context(cafile=config["ca_file"])).status_code == 200
    entry = wait_until(lambda: [d for d in control.sns_deliveries() if d["type"] == "UnsubscribeConfirmation"
                                and d["subscription_arn"] == second["arn"] and d["status"]],
                       timeout=10, message="the UnsubscribeConfirmation POST")[0]
    assert entry["status"] == 204


def test_events_for_a_provider_not_in_use_are_404(stack):
    assert sns.post_sns(stack, "/webhooks/smtp/events", {"Type": "Notification"}).status_code == 404

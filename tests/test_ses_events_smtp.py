"""SES events of mail sent through SES's SMTP interface, end to end: the stack sends email with
the SMTP provider (its own module: a stack's providers are fixed when it starts), each mail
tagged ``X-SES-MESSAGE-TAGS: delivery_id=<id>``; the sandbox's SMTP server reads the tag as
SES does and publishes the mail's events over SNS to ``/webhooks/smtp/events``, where they are
matched by the tag alone (SES gives the mail a message id of its own)."""

from __future__ import annotations

import pytest

from devtools import demo
from notify.models import AddressSuppression
from tests import sns_support as sns

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

STACK_ENV = {**sns.trust_env(), "NOTIFY_EMAIL_PROVIDER": "smtp"}
EVENTS = "/webhooks/smtp/events"


@pytest.fixture(scope="module")
def subscription(stack):
    return sns.subscribe(stack, EVENTS)


@pytest.fixture
def key(stack, transactional_db, subscription):
    assert subscription["status"] == "confirmed", subscription
    return demo.create_app("ses-smtp-events")[1]


def test_an_email_through_smtp_ends_delivered_by_its_events(stack, key, control):
    user = sns.new_recipient(stack, key, sns.simulator("success"))
    row = sns.wait_status(sns.send_email(stack, key, user)["id"], "delivered")
    assert row.provider == "smtp" and row.provider_message_id.endswith("@example.com>")
    sent = control.records("smtp", delivery_id=str(row.id), accepted=True)[0]
    assert sent["headers"]["X-SES-MESSAGE-TAGS"] == f"delivery_id={row.id}"
    assert sns.events(str(row.id)) == {"sent": "", "delivered": ""}


def test_a_hard_bounce_of_smtp_mail_opts_the_address_out(stack, key):
    user = sns.new_recipient(stack, key, sns.simulator("bounce"))
    row = sns.wait_status(sns.send_email(stack, key, user)["id"], "bounced")
    assert sns.events(str(row.id))["bounced"] == "Permanent:General"
    assert AddressSuppression.objects.get(app__name="ses-smtp-events").reason == "hard_bounce"
    following = sns.send_email(stack, key, user)
    assert (following["status"], following["reason"]) == ("suppressed", "hard_bounce")


def test_events_reach_only_the_provider_in_use(stack):
    assert sns.post_sns(stack, "/webhooks/ses/events", {"Type": "Notification"}).status_code == 404

"""What the SES-events stack tests share: the stack's trust in the sandbox's SNS stand-in (by
configuration only), recipients and sends through the API, and SNS messages signed here with the
sandbox's signing key (sandbox.sns.sign, the stand-in's own signer)."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import uuid
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from devtools import demo
from notify.models import Delivery
from sandbox.credentials import SNS_TOPIC_ARN
from sandbox.sns import sign, sns_timestamp
from tests.conftest import wait_until

#: The stack sandbox's SNS port (sandbox/ports.py: port base + 7).
SNS_PORT = int(os.environ["NOTIFY_TEST_SANDBOX_PORT_BASE"]) + 7


def trust_env() -> dict[str, str]:
    """STACK_ENV entries that make the stack take the sandbox's SNS messages: its topic, its
    host:port as the SNS host, its CA for that host's TLS (what sandbox.env says, known before
    the sandbox starts)."""
    return {"NOTIFY_SNS_TOPIC_ARNS": SNS_TOPIC_ARN,
            "NOTIFY_SNS_CERT_HOST_PATTERN": re.escape(f"127.0.0.1:{SNS_PORT}"),
            "NOTIFY_SNS_CA_FILE": str(Path(settings.NOTIFY_SANDBOX_DIR).resolve() / "ca.pem")}


def subscribe(stack, path: str) -> dict:
    """Subscribe the stack's ``path`` to the sandbox topic; the stack confirms it (or not)."""
    from sandbox.client import SandboxControl

    control = SandboxControl(stack.control_url)
    try:
        return control.sns_subscribe(stack.api_url + path, "1")
    finally:
        control.close()


def new_recipient(stack, key: str, email: str) -> str:
    user = f"r-{secrets.token_hex(4)}"
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}", {"email": email})
    assert status == 201, body
    return user


def simulator(kind: str) -> str:
    """A fresh SES mailbox simulator address (``success``, ``bounce``, ``complaint``)."""
    return f"{kind}+{secrets.token_hex(4)}@simulator.amazonses.com"


def send_email(stack, key: str, user: str) -> dict:
    """Send one email through the API; returns its delivery as answered."""
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                             {"recipient": user, "content": {"email": {"subject": "Hello", "text": "Hi there."}}})
    assert status == 202, body
    return body["deliveries"][0]


def wait_status(delivery_id: str, status: str, timeout: float = 20) -> Delivery:
    return wait_until(lambda: (d := Delivery.objects.get(id=delivery_id)).status == status and d, timeout=timeout,
                      message=f"delivery {delivery_id} to be {status}")


def events(delivery_id: str) -> dict[str, str]:
    """kind → reason of the delivery's events."""
    from notify.models import DeliveryEvent

    return dict(DeliveryEvent.objects.filter(delivery_id=delivery_id).values_list("kind", "reason"))


def signing_key(control):
    return serialization.load_pem_private_key(Path(control.config()["sns"]["signing_key_file"]).read_bytes(), None)


def ses_notification(control, record: dict, *, version: str = "1", key=None, **fields) -> dict:
    """An SNS Notification carrying ``record``, signed with the sandbox's key (or ``key``) after
    ``fields`` replaced the defaults (e.g. ``Timestamp``, ``TopicArn``, ``SigningCertURL``)."""
    sns = control.config()["sns"]
    doc = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": sns["topic_arn"],
           "Message": json.dumps(record), "Timestamp": sns_timestamp(), "SigningCertURL": sns["signing_cert_url"],
           "UnsubscribeURL": f"{sns['url']}/?Action=Unsubscribe&SubscriptionArn=x", **fields}
    return sign(doc, key or signing_key(control), version)


def bounce_record(delivery_id: str, message_id: str, address: str, bounce_type: str = "Permanent") -> dict:
    """An SES event publishing Bounce record about the delivery."""
    now = sns_timestamp()
    return {"eventType": "Bounce",
            "mail": {"timestamp": now, "messageId": message_id, "source": "notify@example.com",
                     "destination": [address], "tags": {"delivery_id": [delivery_id]}},
            "bounce": {"bounceType": bounce_type, "bounceSubType": "General", "timestamp": now,
                       "bouncedRecipients": [{"emailAddress": address}]}}


def post_sns(stack, path: str, message: dict) -> httpx.Response:
    """POST ``message`` to the stack as SNS does (JSON as text/plain, the type header)."""
    return httpx.post(stack.api_url + path, content=json.dumps(message).encode(), timeout=20,
                      headers={"Content-Type": "text/plain; charset=UTF-8",
                               "x-amz-sns-message-type": message.get("Type", "")})


def hours_ago(hours: float) -> str:
    return sns_timestamp(time.time() - hours * 3600)

"""The SNS stand-in and SES event publishing, seen from a subscriber: a plain HTTP endpoint in
this process receives what the sandbox POSTs and checks the signatures the way AWS documents
("Verifying the signatures of Amazon SNS messages"), with the certificate served at the
message's SigningCertURL."""

from __future__ import annotations

import base64
import json
import queue
import smtplib
import ssl
import threading
import uuid
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sandbox.client import SandboxError

SIGNED = {"Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
          "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                                       "Type")}
SIGNED["UnsubscribeConfirmation"] = SIGNED["SubscriptionConfirmation"]


class Endpoint:
    """An HTTP subscriber: every POST lands on ``received`` as (headers, message); with
    ``confirm`` it GETs a SubscriptionConfirmation's SubscribeURL like a real subscriber."""

    def __init__(self, ca: str, confirm: bool) -> None:
        self.received: queue.Queue = queue.Queue()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if confirm and message["Type"] == "SubscriptionConfirmation":
                    httpx.get(message["SubscribeURL"], verify=ssl.create_default_context(cafile=ca))
                endpoint.received.put((dict(self.headers), message))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, kind: str | None = None, timeout: float = 5) -> tuple[dict, dict]:
        while True:
            headers, message = self.received.get(timeout=timeout)
            if kind is None or message["Type"] == kind:
                return headers, message


@pytest.fixture
def endpoint(ctl, ca):
    made = []

    def make(confirm: bool = True, version: str = "1") -> tuple[Endpoint, dict]:
        receiver = Endpoint(ca, confirm)
        made.append(receiver)
        return receiver, ctl.sns_subscribe(receiver.url, version)

    yield make
    ctl.sns_unsubscribe_all()
    for receiver in made:
        receiver.server.shutdown()


def status_of(ctl, sub: dict) -> str:
    return next(s["status"] for s in ctl.sns_subscriptions() if s["arn"] == sub["arn"])


def verify(message: dict, ca: str) -> None:
    """AWS's documented check: the string to sign, the certificate's RSA key, SHA1 or SHA256."""
    pem = httpx.get(message["SigningCertURL"], verify=ssl.create_default_context(cafile=ca)).content
    text = "".join(f"{name}\n{message[name]}\n" for name in SIGNED[message["Type"]] if name in message)
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}[message["SignatureVersion"]]
    x509.load_pem_x509_certificate(pem).public_key().verify(
        base64.b64decode(message["Signature"]), text.encode(), padding.PKCS1v15(), algorithm)


def test_a_subscription_is_confirmed_only_through_its_subscribe_url(ctl, cfg, ca, endpoint):
    receiver, sub = endpoint(confirm=False)
    assert sub["status"] == "pending_confirmation" and sub["confirmation"]["status"] == 204
    headers, message = receiver.next("SubscriptionConfirmation")
    assert headers["x-amz-sns-message-type"] == "SubscriptionConfirmation"
    assert headers["Content-Type"].startswith("text/plain")
    assert message["TopicArn"] == cfg["sns"]["topic_arn"] and message["SigningCertURL"] == cfg["sns"]["signing_cert_url"]
    verify(message, ca)
    tls = ssl.create_default_context(cafile=ca)
    wrong = message["SubscribeURL"].replace(message["Token"], "0" * 128)
    assert httpx.get(wrong, verify=tls).status_code == 400
    assert status_of(ctl, sub) == "pending_confirmation"
    answer = httpx.get(message["SubscribeURL"], verify=tls)
    assert answer.status_code == 200 and sub["arn"] in answer.text
    assert status_of(ctl, sub) == "confirmed"


def test_an_ses_mail_publishes_send_then_delivery_signed_with_sha256(ses_client, ca, endpoint):
    receiver, sub = endpoint(version="2")
    assert sub["status"] == "confirmed"
    did = str(uuid.uuid4())
    sent = ses_client.send_email(
        FromEmailAddress="notify@example.com", Destination={"ToAddresses": ["success@simulator.amazonses.com"]},
        Content={"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "t"}}}},
        EmailTags=[{"Name": "delivery_id", "Value": did}])
    kinds = []
    for _ in range(2):
        headers, message = receiver.next("Notification")
        verify(message, ca)
        assert message["SignatureVersion"] == "2" and headers["x-amz-sns-subscription-arn"] == sub["arn"]
        record = json.loads(message["Message"])
        assert record["mail"]["messageId"] == sent["MessageId"]
        assert record["mail"]["tags"]["delivery_id"] == [did]
        kinds.append(record["eventType"])
    assert kinds == ["Send", "Delivery"]


def test_smtp_mail_is_tagged_from_its_header_and_the_simulator_bounces(ctl, cfg, ca, endpoint):
    receiver, _ = endpoint()
    did = str(uuid.uuid4())
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "notify@example.com", "bounce+x@simulator.amazonses.com", "Hi"
    msg["X-SES-MESSAGE-TAGS"] = f"delivery_id={did}, campaign=spring"
    msg.set_content("t")
    s = cfg["smtp"]
    with smtplib.SMTP(s["host"], s["port"], timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=ca))
        client.login(s["username"], s["password"])
        client.send_message(msg)
    records = [json.loads(receiver.next("Notification")[1]["Message"]) for _ in range(2)]
    assert [r["eventType"] for r in records] == ["Send", "Bounce"]
    bounce = records[1]
    assert (bounce["bounce"]["bounceType"], bounce["bounce"]["bounceSubType"]) == ("Permanent", "General")
    assert bounce["bounce"]["bouncedRecipients"][0]["emailAddress"] == "bounce+x@simulator.amazonses.com"
    assert bounce["mail"]["tags"]["delivery_id"] == [did] and bounce["mail"]["tags"]["campaign"] == ["spring"]
    assert "X-SES-MESSAGE-TAGS" not in {h["name"] for h in bounce["mail"]["headers"]}  # SES removes it
    assert ctl.records("smtp", accepted=True)[-1]["extra"]["message_id"] == bounce["mail"]["messageId"]


def test_events_on_demand_in_both_formats_and_repeated(ctl, ses_client, endpoint):
    receiver, _ = endpoint()
    sent = ses_client.send_email(
        FromEmailAddress="notify@example.com", Destination={"ToAddresses": ["someone@example.org"]},
        Content={"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "t"}}}})
    for _ in range(2):
        receiver.next("Notification")  # Send, Delivery
    answer = ctl.ses_event("Bounce", message_id=sent["MessageId"], bounce_type="Transient", repeat=2)
    first, second = (receiver.next("Notification")[1] for _ in range(2))
    assert first == second and [d["status"] for d in answer["deliveries"]] == [204, 204]
    assert json.loads(first["Message"])["bounce"]["bounceSubType"] == "MailboxFull"
    ctl.ses_event("Complaint", message_id=sent["MessageId"], format="notification")
    record = json.loads(receiver.next("Notification")[1]["Message"])
    assert record["notificationType"] == "Complaint" and "tags" not in record["mail"]
    with pytest.raises(SandboxError, match="404"):
        ctl.ses_event("Delivery", message_id="no-such-message")
    with pytest.raises(SandboxError, match="400"):
        ctl.ses_event("Exploded", message_id=sent["MessageId"])
    with pytest.raises(SandboxError, match="400"):
        ctl.ses_event("Open", message_id=sent["MessageId"], format="notification")


def test_unsubscribing_posts_an_unsubscribe_confirmation(ctl, cfg, ca, endpoint):
    receiver, sub = endpoint()
    receiver.next("SubscriptionConfirmation")
    url = f"{cfg['sns']['url']}/?Action=Unsubscribe&SubscriptionArn={quote(sub['arn'], safe='')}"
    assert httpx.get(url, verify=ssl.create_default_context(cafile=ca)).status_code == 200
    headers, message = receiver.next("UnsubscribeConfirmation")
    verify(message, ca)
    assert headers["x-amz-sns-subscription-arn"] == sub["arn"]
    assert status_of(ctl, sub) == "deleted"


def test_endpoints_off_loopback_are_not_called(ctl):
    sub = ctl.sns_subscribe("http://example.org/events")
    assert sub["status"] == "pending_confirmation" and "loopback" in sub["confirmation"]["error"]
    ctl.sns_unsubscribe_all()

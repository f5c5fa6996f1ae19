"""Amazon SNS stand-in: one topic, its HTTP(S) subscriptions, signed messages.

AWS documentation (Amazon SNS Developer Guide): "Parsing message formats" (the JSON bodies of
``Notification``, ``SubscriptionConfirmation`` and ``UnsubscribeConfirmation``, POSTed as
``text/plain`` with the headers ``x-amz-sns-message-type``, ``x-amz-sns-message-id``,
``x-amz-sns-topic-arn`` and, but for a confirmation, ``x-amz-sns-subscription-arn``);
"Verifying the signatures of Amazon SNS messages" (the string to sign; ``SignatureVersion`` 1 is
SHA1withRSA, 2 SHA256withRSA); "Confirm the subscription" (GET the ``SubscribeURL``) and the
``ConfirmSubscription`` / ``Unsubscribe`` query API answers.

A subscription is made through the control API (``POST /sns/subscriptions {"endpoint",
"signature_version"}``): the stand-in POSTs a ``SubscriptionConfirmation`` to the endpoint, and
the subscription is confirmed once the endpoint GETs its ``SubscribeURL`` on the SNS port. Only
confirmed subscriptions get ``Notification`` messages (:meth:`SnsTopic.publish`); deleting one
(control API, or a GET of a message's ``UnsubscribeURL``) POSTs an ``UnsubscribeConfirmation``.
The SNS port also serves the signing certificate at ``SigningCertURL``. Endpoints are called
like Twilio callbacks: loopback and ``--callback-hosts`` only, TLS not verified; SNS waits 15 s
for an answer. Every POST is logged with the endpoint's answer (``GET /sns/deliveries``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .common import callback_allowed
from .credentials import sns_signing_cert_url

#: The signed fields of each message type, in the order they are signed.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
SIGNATURE_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
#: Seconds SNS waits for an HTTP(S) endpoint's answer.
ENDPOINT_TIMEOUT = 15.0
XMLNS = "https://sns.amazonaws.com/doc/2010-03-31/"
MAX_LOG = 10_000


def sns_timestamp(epoch: float | None = None) -> str:
    """An SNS ``Timestamp``: ISO 8601 UTC with milliseconds (``2012-04-26T20:45:04.751Z``)."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sign(message: dict[str, Any], key, version: str) -> dict[str, Any]:
    """``message`` with ``SignatureVersion`` and ``Signature`` (base64 PKCS #1 v1.5 over the
    string to sign: ``<name>\\n<value>\\n`` for each signed field present, in order).

    Raises:
        ValueError: ``version`` is not ``"1"`` or ``"2"``.
    """
    if version not in SIGNATURE_HASHES:
        raise ValueError("signature_version must be '1' or '2'")
    text = "".join(f"{name}\n{message[name]}\n" for name in SIGNED_FIELDS[message["Type"]] if name in message)
    signature = key.sign(text.encode("utf-8"), padding.PKCS1v15(), SIGNATURE_HASHES[version]())
    return {**message, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode("ascii")}


def _xml(action: str, result: str = "") -> Response:
    body = (f'<{action}Response xmlns="{XMLNS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>")
    return Response(body, media_type="text/xml")


def _xml_error(status: int, code: str, message: str) -> Response:
    body = (f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
    return Response(body, status_code=status, media_type="text/xml")


class SnsTopic:
    """The topic SES events are published to, its subscriptions and the SNS port's app.

    Attributes:
        arn: the topic's ARN (``sandbox.json`` ``sns.topic_arn``).
        subscriptions: subscription ARN → ``{"arn", "endpoint", "status"
            (pending_confirmation / confirmed / deleted), "signature_version", "token"}``.
        deliveries: the POSTs made, oldest first: ``{"type", "sns_message_id", "endpoint",
            "subscription_arn", "message", "status", "response", "error", "time"}``.
    """

    def __init__(self, state) -> None:
        creds = state.creds
        self.state = state
        self.arn = creds.sns_topic_arn
        self.base_url = creds.ports.https(creds.ports.sns)
        self.cert_url = sns_signing_cert_url(creds)
        self._cert_path = urlsplit(self.cert_url).path
        self._cert_pem = creds.sns_signing_cert_pem
        self._key = creds.sns_signing_key
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        state.sns = self

    # -- subscriptions ---------------------------------------------------------------------------
    def confirmed(self) -> list[dict[str, Any]]:
        """The subscriptions that get notifications."""
        return [s for s in self.subscriptions.values() if s["status"] == "confirmed"]

    async def subscribe(self, endpoint: str, signature_version: str = "1") -> dict[str, Any]:
        """A pending subscription of ``endpoint`` and its ``SubscriptionConfirmation`` POST
        (the returned dict's ``confirmation``; by the time it returns the endpoint may have
        confirmed). Raises ``ValueError`` for a bad version or an endpoint not http(s)."""
        if signature_version not in SIGNATURE_HASHES:
            raise ValueError("signature_version must be '1' or '2'")
        if urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError("endpoint must be an http(s) URL")
        arn = f"{self.arn}:{uuid.uuid4()}"
        sub = {"arn": arn, "endpoint": endpoint, "status": "pending_confirmation",
               "signature_version": signature_version, "token": secrets.token_hex(64)}
        self.subscriptions[arn] = sub
        entry = await self._post(sub, self._confirmation(sub, "SubscriptionConfirmation"))
        return {**self.subscriptions[arn], "confirmation": entry}

    def confirm(self, topic_arn: str, token: str) -> dict[str, Any] | None:
        """Confirm the subscription holding ``token`` (a ``SubscribeURL`` GET); None when none
        does."""
        for sub in self.subscriptions.values():
            if topic_arn == self.arn and secrets.compare_digest(sub["token"], token or ""):
                sub["status"] = "confirmed"
                return sub
        return None

    async def unsubscribe(self, arn: str) -> dict[str, Any] | None:
        """Delete subscription ``arn`` and POST its ``UnsubscribeConfirmation``; None when
        unknown."""
        sub = self.subscriptions.get(arn)
        if sub is None or sub["status"] == "deleted":
            return None
        sub["status"] = "deleted"
        return await self._post(sub, self._confirmation(sub, "UnsubscribeConfirmation"))

    def _confirmation(self, sub: dict[str, Any], kind: str) -> dict[str, Any]:
        if kind == "SubscriptionConfirmation":
            text = (f"You have chosen to subscribe to the topic {self.arn}.\n"
                    "To confirm the subscription, visit the SubscribeURL included in this message.")
        else:
            text = (f"You have chosen to deactivate subscription {sub['arn']}.\n"
                    "To cancel this operation and restore the subscription, visit the SubscribeURL "
                    "included in this message.")
        return {"Type": kind, "MessageId": str(uuid.uuid4()), "Token": sub["token"], "TopicArn": self.arn,
                "Message": text,
                "SubscribeURL": f"{self.base_url}/?Action=ConfirmSubscription&TopicArn={quote(self.arn, safe='')}"
                                f"&Token={sub['token']}",
                "Timestamp": sns_timestamp(), "SigningCertURL": self.cert_url}

    # -- messages --------------------------------------------------------------------------------
    async def publish(self, message: str, *, subject: str | None = None, repeat: int = 1) -> list[dict[str, Any]]:
        """POST one ``Notification`` carrying ``message`` to every confirmed subscription,
        ``repeat`` times each (SNS delivers at least once: the same signed message again).
        Returns the log entries of the POSTs."""
        message_id = str(uuid.uuid4())
        entries = []
        for sub in self.confirmed():
            doc = {"Type": "Notification", "MessageId": message_id, "TopicArn": self.arn, "Message": message,
                   "Timestamp": sns_timestamp(), "SigningCertURL": self.cert_url,
                   "UnsubscribeURL": f"{self.base_url}/?Action=Unsubscribe&SubscriptionArn="
                                     f"{quote(sub['arn'], safe='')}"}
            if subject is not None:
                doc["Subject"] = subject
            for _ in range(max(1, repeat)):
                entries.append(await self._post(sub, doc))
        return entries

    async def _post(self, sub: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
        signed = sign(doc, self._key, sub["signature_version"])
        entry: dict[str, Any] = {"type": doc["Type"], "sns_message_id": doc["MessageId"],
                                 "endpoint": sub["endpoint"], "subscription_arn": sub["arn"],
                                 "message": signed, "status": None, "response": None, "error": None,
                                 "time": time.time()}
        self.deliveries.append(entry)
        if len(self.deliveries) > MAX_LOG:
            del self.deliveries[:1000]
        if not callback_allowed(sub["endpoint"], self.state.callback_hosts):
            entry["error"] = "only loopback and --callback-hosts endpoints are called by the sandbox"
            return entry
        headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": doc["Type"],
                   "x-amz-sns-message-id": doc["MessageId"], "x-amz-sns-topic-arn": self.arn,
                   "User-Agent": "Amazon Simple Notification Service Agent"}
        if doc["Type"] != "SubscriptionConfirmation":
            headers["x-amz-sns-subscription-arn"] = sub["arn"]
        try:
            async with self._client().post(sub["endpoint"], data=json.dumps(signed).encode(),
                                           headers=headers) as resp:
                entry["status"] = resp.status
                entry["response"] = (await resp.text(errors="replace"))[:2000]
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=False, limit=64),
                timeout=aiohttp.ClientTimeout(total=ENDPOINT_TIMEOUT))
        return self._http

    def spawn(self, coro) -> None:
        """Run ``coro`` on the running loop, kept until done (cancelled at close)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Cancel what is pending and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()

    # -- the SNS port ------------------------------------------------------------------------------
    def app(self) -> Starlette:
        """The SNS port: ``GET <signing cert path>`` and the query API's ``GET
        /?Action=ConfirmSubscription&TopicArn=&Token=`` and ``GET
        /?Action=Unsubscribe&SubscriptionArn=``; anything else 404."""

        async def certificate(request: Request) -> Response:
            if request.url.path != self._cert_path:
                return _xml_error(404, "NotFound", "No such certificate")
            return Response(self._cert_pem, media_type="application/x-pem-file")

        async def query_api(request: Request) -> Response:
            q = request.query_params
            if q.get("Action") == "ConfirmSubscription":
                sub = self.confirm(q.get("TopicArn", ""), q.get("Token", ""))
                if sub is None:
                    return _xml_error(400, "InvalidParameter", "Invalid parameter: Token")
                return _xml("ConfirmSubscription", f"<SubscriptionArn>{sub['arn']}</SubscriptionArn>")
            if q.get("Action") == "Unsubscribe":
                arn = q.get("SubscriptionArn", "")
                if arn not in self.subscriptions:
                    return _xml_error(404, "NotFound", "Subscription does not exist")
                self.spawn(self.unsubscribe(arn))
                return _xml("Unsubscribe")
            return _xml_error(400, "InvalidAction", "The action is not valid for this web service")

        return Starlette(routes=[Route("/", query_api, methods=["GET"]),
                                 Route("/{name:path}", certificate, methods=["GET"])])

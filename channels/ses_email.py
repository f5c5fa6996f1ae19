"""Email through Amazon SES v2 ``SendEmail`` with boto3.

Provider documentation: SES API v2 reference, ``SendEmail`` and its errors
(docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html); one-click unsubscribe per
RFC 8058 ("Best practices for bulk senders", Gmail / Yahoo sender requirements); the events SES
publishes to SNS (:mod:`channels.ses_events`).

One boto3 session and ``sesv2`` client per worker process. botocore's own retries are switched
off (``total_max_attempts: 1``): botocore would otherwise retry throttling and 5xx answers
itself, up to 3 attempts in "standard" mode, behind Celery's back. The endpoint comes from
``endpoint_url`` in the config, else from ``AWS_ENDPOINT_URL_SESV2`` / ``AWS_ENDPOINT_URL``,
which botocore reads itself; else AWS's regional endpoint.
"""

from __future__ import annotations

import email.utils
from typing import Any, Mapping, Sequence

import boto3
import botocore.config
import botocore.exceptions

from .base import Message, Result, Setting, WebhookEvent, common_settings
from .email import EmailChannel, mailbox
from .http import DEFAULT_POOL_SIZE, ca_file, config_timeout, http_result
from .ses_events import DELIVERY_ID_TAG, parse_record

#: Error codes that are transient although SES answers them with a 4xx status.
RETRY_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
    # Sending is paused for the account (v1 name) or configuration set (v2 name): the channel
    # is stopped until an operator resumes it; retry later rather than fail the mail.
    "AccountSendingPausedException", "SendingPausedException",
})


class SESEmailChannel(EmailChannel):
    """Email sender via SES v2 ``SendEmail`` with ``Content.Simple``.

    Config keys:
        endpoint_url: SES v2 endpoint (optional; ``AWS_ENDPOINT_URL_SESV2`` or AWS's default).
        region: AWS region, e.g. ``us-east-1`` (required).
        access_key_id, secret_access_key: credentials (optional as a pair; boto3's default
            chain, e.g. an instance role, otherwise).
        from_address: verified ``FromEmailAddress`` (required).
        configuration_set: ``ConfigurationSetName`` for event publishing (optional).
        ca_file: CA bundle to verify the endpoint (optional).
        timeout: seconds for connect and read (optional, default 10).

    Message mapping: :class:`channels.email.EmailChannel` (the channel's rules), sent as
    ``Content.Simple`` with the headers in ``Headers`` and the message tag ``delivery_id`` in
    ``EmailTags`` (SES events carry it back). ``FromEmailAddress`` is
    ``from_address`` as configured, or, when the content has a ``from_name``, its address with
    that display name (RFC 2047 encoded words when not ASCII, as SES requires; a quoted string
    when it has specials): see :func:`channels.email.mailbox`.

    Answers: 200 → SENT (``MessageId``); ``TooManyRequestsException`` / throttling / 5xx →
    RETRY; ``AccountSendingPausedException`` / ``SendingPausedException`` → RETRY with that
    reason (the channel is paused); ``MessageRejected``, ``MailFromDomainNotVerifiedException``,
    ``BadRequestException``, ``NotFoundException``, ``AccountSuspendedException`` and other 4xx
    → FAILED; connection errors and timeouts → RETRY.

    Events: SES publishes a configuration set's events to an SNS topic; its HTTPS subscription
    ``/webhooks/ses/events`` (``sns_webhook_kinds``) reaches :meth:`parse_webhook`.
    """

    provider = "ses"
    sns_webhook_kinds = ("events",)
    settings = (
        Setting("endpoint_url", "AWS_ENDPOINT_URL_SESV2", sandbox="ses.url", per_app=False,
                doc="SES v2 endpoint (AWS's regional endpoint when unset)"),
        Setting("region", "NOTIFY_SES_REGION", default="us-east-1", required=True,
                sandbox="ses.region", doc="AWS region"),
        Setting("access_key_id", "NOTIFY_SES_ACCESS_KEY_ID", sandbox="ses.access_key_id",
                doc="access key (boto3's default chain, e.g. an instance role, when unset)"),
        Setting("secret_access_key", "NOTIFY_SES_SECRET_ACCESS_KEY", secret=True,
                sandbox="ses.secret_access_key", doc="its secret"),
        Setting("from_address", "NOTIFY_SES_FROM", required=True, sandbox="ses.from_address",
                doc="verified sender identity (`FromEmailAddress`)"),
        Setting("configuration_set", "NOTIFY_SES_CONFIGURATION_SET",
                doc="`ConfigurationSetName` for event publishing"),
        *common_settings("NOTIFY_SES"),
    )
    transport_errors = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
    timeout_errors = (botocore.exceptions.ConnectTimeoutError,
                      botocore.exceptions.ReadTimeoutError)
    unsent_errors = (botocore.exceptions.EndpointConnectionError,
                     botocore.exceptions.ConnectTimeoutError, botocore.exceptions.SSLError)
    # boto3 clients are thread-safe (boto3 docs, "Multithreading"): as many sends in flight as
    # the client's pooled connections. SES enforces the account's maximum send rate itself
    # (429 Throttling → RETRY); at 4, email waited in its queue at the daily mean (bench/latency.py).
    send_concurrency = DEFAULT_POOL_SIZE

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        timeout = config_timeout(config)
        self.from_address = config["from_address"]
        #: the bare address of ``from_address`` (which may be ``Name <addr>``)
        self.from_addr_spec = email.utils.parseaddr(self.from_address)[1] or self.from_address
        self.configuration_set = config.get("configuration_set") or None
        self.session = boto3.session.Session(
            aws_access_key_id=config.get("access_key_id") or None,
            aws_secret_access_key=config.get("secret_access_key") or None,
            region_name=config["region"],
        )
        self.client = self.session.client(
            "sesv2",
            endpoint_url=config.get("endpoint_url") or None,
            verify=ca_file(config),  # None: botocore's default bundle (or AWS_CA_BUNDLE)
            config=botocore.config.Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=timeout,
                read_timeout=timeout,
                max_pool_connections=DEFAULT_POOL_SIZE,
            ),
        )

    # -- steps -------------------------------------------------------------------------------
    def build_payload(self, message: Message) -> dict[str, Any]:
        """Return the ``send_email`` keyword arguments.

        Raises:
            InvalidMessage: see :meth:`channels.email.EmailChannel.email_parts`.
        """
        parts = self.email_parts(message)
        body: dict[str, Any] = {}
        if parts.text:
            body["Text"] = {"Data": parts.text, "Charset": "UTF-8"}
        if parts.html:
            body["Html"] = {"Data": parts.html, "Charset": "UTF-8"}
        sender = mailbox(parts.from_name, self.from_addr_spec) if parts.from_name else self.from_address
        kwargs: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": [parts.to]},
            "Content": {"Simple": {
                "Subject": {"Data": parts.subject, "Charset": "UTF-8"}, "Body": body,
                "Headers": [{"Name": name, "Value": value} for name, value in parts.headers]}},
            "EmailTags": [{"Name": DELIVERY_ID_TAG, "Value": message.delivery_id}],
        }
        if self.configuration_set:
            kwargs["ConfigurationSetName"] = self.configuration_set
        return kwargs

    def parse_webhook(self, kind: str, params: Mapping[str, Any],
                      query: Mapping[str, str]) -> Sequence[WebhookEvent]:
        """``events``: one SES event record (:func:`channels.ses_events.parse_record`), matched
        to the delivery by its tag and by ``mail.messageId``, the ``MessageId`` stored for it."""
        return parse_record(params, match_message_id=True) if kind == "events" else []

    def post(self, message: Message, payload: dict[str, Any]) -> dict[str, Any]:
        """One ``SendEmail`` call; returns the response dict. Errors raise ``ClientError``."""
        return self.client.send_email(**payload)

    def classify(self, answer: Mapping[str, Any]) -> Result:
        """A 200 answer is SENT with its ``MessageId``."""
        meta = answer.get("ResponseMetadata", {})
        return http_result(meta.get("HTTPStatusCode", 200),
                           provider_message_id=answer.get("MessageId"),
                           raw={"MessageId": answer.get("MessageId"),
                                "RequestId": meta.get("RequestId")})

    def classify_error(self, exc: Exception) -> Result:
        """Map ``botocore.exceptions.ClientError`` by error code and HTTP status."""
        if not isinstance(exc, botocore.exceptions.ClientError):
            raise exc
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        code = error.get("Code") or str(status)
        return http_result(status, headers=meta.get("HTTPHeaders"), reason=code,
                           retry_reasons=RETRY_CODES,
                           raw={"code": code, "message": error.get("Message"),
                                "RequestId": meta.get("RequestId")})

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()

"""Email through Amazon SES v2 ``SendEmail`` with boto3.

Provider documentation: SES API v2 reference, ``SendEmail`` and its errors
(docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html); one-click unsubscribe per
RFC 8058 ("Best practices for bulk senders", Gmail / Yahoo sender requirements).

One boto3 session and ``sesv2`` client per worker process. botocore's own retries are switched
off (``total_max_attempts: 1``): botocore would otherwise retry throttling and 5xx answers
itself, up to 3 attempts in "standard" mode, behind Celery's back. The endpoint comes from
``endpoint_url`` in the config, else from ``AWS_ENDPOINT_URL_SESV2`` / ``AWS_ENDPOINT_URL``,
which botocore reads itself; else AWS's regional endpoint.
"""

from __future__ import annotations

from typing import Any, Mapping

import boto3
import botocore.config
import botocore.exceptions

from .base import Channel, Message, Result
from .errors import InvalidMessage
from .http import DEFAULT_POOL_SIZE, ca_file, config_timeout, http_result

#: Error codes that are transient although SES answers them with a 4xx status.
RETRY_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
    # Sending is paused for the account (v1 name) or configuration set (v2 name): the channel
    # is stopped until an operator resumes it; retry later rather than fail the mail.
    "AccountSendingPausedException", "SendingPausedException",
})
#: Header carrying the delivery id (SES event records and the sandbox read it back).
DELIVERY_ID_HEADER = "X-Notify-Delivery-Id"


class SESEmailChannel(Channel):
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

    Message mapping: ``to`` is one address; ``content`` keys ``subject``, ``text``, optional
    ``html`` and ``headers`` (name → value). ``options["list_unsubscribe"]``: an https URL →
    ``List-Unsubscribe: <url>`` and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
    (RFC 8058). ``X-Notify-Delivery-Id`` always carries the delivery id.

    Answers: 200 → SENT (``MessageId``); ``TooManyRequestsException`` / throttling / 5xx →
    RETRY; ``AccountSendingPausedException`` / ``SendingPausedException`` → RETRY with that
    reason (the channel is paused); ``MessageRejected``, ``MailFromDomainNotVerifiedException``,
    ``BadRequestException``, ``NotFoundException``, ``AccountSuspendedException`` and other 4xx
    → FAILED; connection errors and timeouts → RETRY.
    """

    name = "email"
    required_config = ("region", "from_address")
    transport_errors = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
    timeout_errors = (botocore.exceptions.ConnectTimeoutError,
                      botocore.exceptions.ReadTimeoutError)
    unsent_errors = (botocore.exceptions.EndpointConnectionError,
                     botocore.exceptions.ConnectTimeoutError, botocore.exceptions.SSLError)
    collapses_resends = False  # a resend after a lost answer can deliver the mail twice

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        timeout = config_timeout(config)
        self.from_address = config["from_address"]
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
            InvalidMessage: ``invalid_address``, ``empty_subject``, ``empty_body``,
                ``invalid_header`` (CR/LF in a header or subject), ``invalid_list_unsubscribe``
                (not an https URL, as RFC 8058 requires).
        """
        to = message.to
        if not isinstance(to, str) or "@" not in to or any(c in to for c in "\r\n,;<> "):
            raise InvalidMessage("invalid_address", "one plain email address expected")
        content = message.content
        subject = content.get("subject")
        if not subject:
            raise InvalidMessage("empty_subject")
        _check_header_value("Subject", subject)
        if not content.get("text") and not content.get("html"):
            raise InvalidMessage("empty_body", "email needs text or html")

        headers = [{"Name": str(name), "Value": str(value)}
                   for name, value in (content.get("headers") or {}).items()]
        headers.append({"Name": DELIVERY_ID_HEADER, "Value": message.delivery_id})
        unsubscribe = message.options.get("list_unsubscribe")
        if unsubscribe:
            if not isinstance(unsubscribe, str) or not unsubscribe.startswith("https://"):
                raise InvalidMessage("invalid_list_unsubscribe",
                                     "RFC 8058 one-click unsubscribe needs an https URL")
            headers.append({"Name": "List-Unsubscribe", "Value": f"<{unsubscribe}>"})
            headers.append({"Name": "List-Unsubscribe-Post",
                            "Value": "List-Unsubscribe=One-Click"})
        for item in headers:
            _check_header_value(item["Name"], item["Name"])
            _check_header_value(item["Name"], item["Value"])

        body: dict[str, Any] = {}
        if content.get("text"):
            body["Text"] = {"Data": content["text"], "Charset": "UTF-8"}
        if content.get("html"):
            body["Html"] = {"Data": content["html"], "Charset": "UTF-8"}
        kwargs: dict[str, Any] = {
            "FromEmailAddress": self.from_address,
            "Destination": {"ToAddresses": [to]},
            "Content": {"Simple": {"Subject": {"Data": subject, "Charset": "UTF-8"},
                                   "Body": body, "Headers": headers}},
        }
        if self.configuration_set:
            kwargs["ConfigurationSetName"] = self.configuration_set
        return kwargs

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


def _check_header_value(name: str, value: Any) -> None:
    if "\r" in str(value) or "\n" in str(value):
        raise InvalidMessage("invalid_header", f"{name} contains a line break")

"""SMS through Twilio Programmable Messaging with the official ``twilio`` library.

Provider documentation: "Message resource" (``POST /2010-04-01/Accounts/{Sid}/Messages.json``)
and the error dictionary (twilio.com/docs/api/errors: 21211, 21408, 21610, 21612, 21614,
20429).

The ``twilio.rest.Client`` and its ``TwilioHttpClient`` are built once per worker process. The
HTTP client gets ``max_retries=0`` (Twilio's client mounts a plain adapter otherwise; a retry
here would be a second layer behind Celery and could send an SMS twice), a timeout and
``verify=ca_file`` on its requests session.

Pointing the library at another host (the local sandbox, a regional proxy): ``client.api`` is a
``twilio.base.domain.Domain`` whose public ``base_url`` attribute (``https://api.twilio.com``)
is the only place every Messages URL is built from, so setting it is enough; ``edge`` /
``region`` are then cleared because ``ClientBase.get_hostname`` would otherwise rewrite the
configured host as if it were ``api.<edge>.<region>.twilio.com``. This is configuration of the
real client, not a patch; a ``TwilioHttpClient`` subclass rewriting hosts would also change
URLs the library logs and signs, and hide the redirection in transport code.

Credentials ("Twilio API requests: authentication"): REST calls authenticate with HTTP Basic,
either ``account_sid:auth_token`` or an API key ``SK…:secret`` of the account (Twilio's advice
for production: a key can be revoked alone), the account still named in every URL; the library
takes the latter as ``Client(api_key_sid, api_key_secret, account_sid)``. Webhooks (status
callbacks, inbound SMS) are signed by Twilio with the account's auth token whichever
credential sent the message, so the auth token is needed either way.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from .base import AddressKind, Channel, Message, Outcome, Result, RetryDefaults, Setting, \
    WebhookEvent, common_settings
from .errors import ChannelConfigurationError, InvalidMessage
from .http import RequestsTransport, config_timeout, http_result, retryless_session
from .sms_segments import sms_info

#: Twilio's limit for ``Body`` (characters).
MAX_BODY_CHARS = 1600
#: Error codes meaning the recipient opted out (replied STOP): RECIPIENT_REFUSED, so the service
#: records the opt-out and stops sending SMS to that number, not just fails this one message.
OPT_OUT_CODES = frozenset({"21610"})
#: Segments one SMS may cost unless the deployment sets ``NOTIFY_TWILIO_MAX_SEGMENTS``.
DEFAULT_MAX_SEGMENTS = 10
#: Error codes meaning "too many requests": retry later.
RETRY_CODES = frozenset({"20429"})
#: Inbound keywords Twilio's Advanced Opt-Out treats as opt-out / opt-in ("Twilio support for
#: opt-out keywords (SMS STOP filtering)").
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE",
                        "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
#: ``MessageStatus`` values of a status callback in the service's delivery events ("Message
#: resource: status values", Twilio docs): ``failed`` (never sent to the carrier) and
#: ``undelivered`` (the carrier could not deliver) both end as ``undelivered`` with the
#: ``ErrorCode``; ``read`` is WhatsApp's read receipt. The rest (queued, accepted, scheduled,
#: sending, canceled) report nothing the service did not know. A callback carries no time of its
#: own (``RawDlrDoneDate`` is the carrier's, to the minute): its events take the time received.
RECEIPTS = {"sent": "sent", "delivered": "delivered", "undelivered": "undelivered", "failed": "undelivered",
            "read": "opened"}
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
#: An API key's SID ("API keys": ``SK`` and 32 hex digits, as every Twilio SID is written).
_API_KEY_SID = re.compile(r"^SK[0-9a-f]{32}$")



class TwilioSMSChannel(RequestsTransport, Channel):
    """SMS sender through ``client.messages.create``.

    Config keys:
        url: API base URL (optional; default ``https://api.twilio.com``).
        account_sid: ``AC…`` account SID (required).
        auth_token: the account's auth token (required; see below).
        api_key_sid, api_key_secret: an API key of the account (``SK`` + 32 hex) and its secret
            (optional, both or neither): REST calls then authenticate with the key instead of
            the auth token.
        from_number: E.164 sender (required unless ``messaging_service_sid`` is set).
        messaging_service_sid: ``MG…`` Messaging Service; preferred over ``from_number`` when
            both are set (Twilio then picks the sender from the service's pool).
        ca_file: CA bundle to verify the API (optional).
        timeout: seconds for connect and read (optional, default 10).

    Message mapping: ``to`` is an E.164 number; ``content["body"]`` the text (≤ 1600
    characters). ``status_callback``: URL Twilio POSTs status changes to; the adapter appends
    ``delivery_id=<id>`` to its query so the callback identifies the delivery (Twilio signs the
    full URL, query included).

    Answers: 201 → SENT (``SM…`` sid); error 21610 → RECIPIENT_REFUSED with reason ``"21610"``
    (the recipient replied STOP); 21211 / 21408 / 21612 / 21614 and other 4xx → FAILED with
    the code as reason (the number is unusable for SMS, but may still be valid for other
    channels, so this is not DEAD_TOKEN); 20429 / HTTP 429 / 5xx → RETRY (``Retry-After`` when
    sent); connection errors and timeouts → RETRY. Refused credentials (401, error 20003, a
    wrong auth token or API key secret) → FAILED ``20003``, as any other 4xx.

    Why the auth token stays required with an API key: it is the only key Twilio signs webhooks
    with. Without it status callbacks could not be verified, and neither could inbound SMS, whose
    STOP replies opt recipients out (that cannot be switched off per app the way asking for
    status callbacks could). Requiring it is the one rule that keeps every webhook verifiable;
    an app that sets an API key sets its account's auth token beside it (the four are one
    settings ``group``: an app's key never meets the deployment's token, nor the reverse).
    """

    name = "sms"
    provider = "twilio"
    label = "SMS"
    content_group = "sms"
    address_kind = AddressKind.PHONE
    retry = RetryDefaults(max_attempts=6, max_age=3600)
    settings = (
        Setting("url", "NOTIFY_TWILIO_URL", default="https://api.twilio.com", sandbox="twilio.url",
                per_app=False, doc="Twilio REST API base URL"),
        Setting("account_sid", "NOTIFY_TWILIO_ACCOUNT_SID", required=True, group="account",
                sandbox="twilio.account_sid", doc="`AC…` account SID"),
        Setting("auth_token", "NOTIFY_TWILIO_AUTH_TOKEN", required=True, secret=True, group="account",
                sandbox="twilio.auth_token", doc="auth token (verifies webhooks; authenticates API calls "
                                                 "unless an API key is set)"),
        Setting("api_key_sid", "NOTIFY_TWILIO_API_KEY_SID", group="account", sandbox="twilio.api_key_sid",
                doc="`SK…` API key of the account, with its secret: authenticates API calls instead of the auth token"),
        Setting("api_key_secret", "NOTIFY_TWILIO_API_KEY_SECRET", secret=True, group="account",
                sandbox="twilio.api_key_secret", doc="the API key's secret"),
        Setting("from_number", "NOTIFY_TWILIO_FROM", sandbox="twilio.from_number",
                doc="E.164 sender (or set the messaging service)"),
        Setting("messaging_service_sid", "NOTIFY_TWILIO_MESSAGING_SERVICE_SID",
                doc="`MG…` Messaging Service, preferred over the sender number"),
        Setting("max_segments", "NOTIFY_TWILIO_MAX_SEGMENTS", default=str(DEFAULT_MAX_SEGMENTS),
                per_app=False,  # the API checks every app's content with the deployment's cap
                doc="most billed segments one SMS may cost (longer texts are refused at the API)"),
        *common_settings("NOTIFY_TWILIO"),
    )
    collapses_resends = False  # a resend after a lost answer can deliver the SMS twice
    # Pooled keep-alive session; the answer a send reads is kept per thread (self._last).
    send_concurrency = 4
    status_callbacks = True
    webhook_kinds = ("status", "inbound")

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        self.from_number = config.get("from_number") or None
        self.messaging_service_sid = config.get("messaging_service_sid") or None
        if not (self.from_number or self.messaging_service_sid):
            raise ChannelConfigurationError(
                "TwilioSMSChannel: set from_number or messaging_service_sid")
        username, password = rest_credentials(config)
        self._last = threading.local()  # Retry-After of this thread's last answer
        self.http_client = TwilioHttpClient(
            timeout=config_timeout(config), max_retries=0,
            request_hooks={"response": [self._remember_answer]})
        retryless_session(config, session=self.http_client.session)  # pool, verify=ca_file
        self.client = Client(username, password, config["account_sid"], http_client=self.http_client)
        self._validator = RequestValidator(config["auth_token"])
        if config.get("url"):
            self.client.api.base_url = str(config["url"]).rstrip("/")
            self.client.edge = self.client.region = None

    # -- declarations ------------------------------------------------------------------------
    @classmethod
    def check_content(cls, content: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The SMS text must be non-empty, at most 1600 characters (Twilio's ``Body``) and at most
        ``max_segments`` billed segments (the deployment's cap, default 10).

        Returns:
            ``{"encoding": "GSM-7" | "UCS-2", "segments": n}``: what the text costs (every
            segment is billed).
        Raises:
            InvalidMessage: ``empty_body``, ``body_too_long``, ``too_many_segments``.
        """
        body = content.get("body")
        if not isinstance(body, str) or not body.strip():
            raise InvalidMessage("empty_body", "SMS needs a non-empty text body")
        if len(body) > MAX_BODY_CHARS:
            raise InvalidMessage("body_too_long", f"{len(body)} characters > {MAX_BODY_CHARS}")
        limit = int((config or {}).get("max_segments") or DEFAULT_MAX_SEGMENTS)
        info = sms_info(body)
        if info["segments"] > limit:
            raise InvalidMessage("too_many_segments",
                                 f"{info['segments']} {info['encoding']} segments > {limit}")
        return {"encoding": info["encoding"], "segments": info["segments"]}

    # -- webhooks ----------------------------------------------------------------------------
    def verify_webhook(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + sorted POST params)),
        checked with the twilio library's RequestValidator (Twilio, "Webhooks security")."""
        signature = next((v for k, v in headers.items() if k.lower() == "x-twilio-signature"), "")
        return bool(signature) and self._validator.validate(url, dict(params), signature)

    def parse_webhook(self, kind: str, params: Mapping[str, str],
                      query: Mapping[str, str]) -> list[WebhookEvent]:
        """``status``: a message status callback (``MessageStatus``, ``ErrorCode``; the delivery
        id is in the callback URL's query); error 21610 means the recipient refused SMS.
        ``inbound``: a message to our number; STOP-type keywords opt the sender out of SMS,
        START-type opt it back in; other text is not ours to act on."""
        raw = dict(params)
        if kind == "status":
            code = params.get("ErrorCode") or None
            status = params.get("MessageStatus") or None
            return [WebhookEvent("status", delivery_id=query.get("delivery_id") or None,
                                 provider_message_id=params.get("MessageSid") or None,
                                 status=status, receipt=RECEIPTS.get(status or ""),
                                 reason=code,
                                 refused=code in OPT_OUT_CODES, raw=raw)]
        if kind == "inbound":
            word = (params.get("Body") or "").strip().upper()
            sender = params.get("From") or None
            if word in STOP_WORDS:
                return [WebhookEvent("opt_out", address=sender, reason=word, raw=raw)]
            if word in START_WORDS:
                return [WebhookEvent("opt_in", address=sender, reason=word, raw=raw)]
        return []

    # -- steps -------------------------------------------------------------------------------
    def build_payload(self, message: Message) -> dict[str, Any]:
        """Return the keyword arguments of ``messages.create``.

        Raises:
            InvalidMessage: ``invalid_number`` (not E.164), and what :meth:`check_content`
                raises.
        """
        if not isinstance(message.to, str) or not _E164.match(message.to):
            raise InvalidMessage("invalid_number", "SMS recipients must be E.164 (+15551234567)")
        self.check_content(message.content, self.config)
        kwargs: dict[str, Any] = {"to": message.to, "body": message.content["body"]}
        if self.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.messaging_service_sid
        else:
            kwargs["from_"] = self.from_number
        if message.status_callback:
            kwargs["status_callback"] = with_query(message.status_callback,
                                                   delivery_id=message.delivery_id)
        return kwargs

    def post(self, message: Message, payload: dict[str, Any]) -> Any:
        """One ``messages.create`` call; returns the MessageInstance. Errors raise."""
        self._last.retry_after = None
        return self.client.messages.create(**payload)

    def classify(self, answer: Any) -> Result:
        """A created message is SENT with its ``SM…`` sid."""
        return Result(Outcome.SENT, provider_message_id=answer.sid, status=201,
                      raw={"sid": answer.sid, "status": answer.status,
                           "num_segments": answer.num_segments})

    def classify_error(self, exc: Exception) -> Result:
        """Map ``TwilioRestException`` / ``TwilioServiceException`` (status + code)."""
        if not isinstance(exc, (TwilioRestException, TwilioServiceException)):
            raise exc
        status = int(exc.status or 0)
        code = str(exc.code) if exc.code is not None else str(status)
        detail = getattr(exc, "msg", None) or getattr(exc, "detail", None)
        headers = {"Retry-After": getattr(self._last, "retry_after", None)}
        return http_result(status, headers=headers, reason=code, retry_reasons=RETRY_CODES,
                           refused=code in OPT_OUT_CODES, raw={"status": status, "code": exc.code, "message": detail})

    def close(self) -> None:
        """Close the pooled session."""
        self.http_client.session.close()

    def _remember_answer(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last.retry_after = response.headers.get("Retry-After")


def rest_credentials(config: Mapping[str, Any]) -> tuple[str, str]:
    """The HTTP Basic (user, password) of REST calls: the API key and its secret when both are
    set, else the account SID and auth token.

    Raises:
        ChannelConfigurationError: only one of ``api_key_sid`` / ``api_key_secret`` is set, or
            the SID is not ``SK`` + 32 hex (the message names the setting, never its value).
    """
    sid, secret = config.get("api_key_sid") or None, config.get("api_key_secret") or None
    if bool(sid) != bool(secret):
        raise ChannelConfigurationError(
            "TwilioSMSChannel: set api_key_sid and api_key_secret together (or neither, to use the auth token)")
    if sid is None:
        return config["account_sid"], config["auth_token"]
    if not isinstance(sid, str) or not _API_KEY_SID.match(sid):
        raise ChannelConfigurationError("TwilioSMSChannel: api_key_sid must be SK and 32 lower-case hex digits")
    return sid, str(secret)


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to (or replacing the same keys in) its query string."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))

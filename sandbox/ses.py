"""Amazon SES v2 emulator: moto's SES v2 backend behind the sandbox's recording/fault layer.

Every request is checked like AWS does (docs.aws.amazon.com/IAM/latest/UserGuide/
reference_sigv-troubleshooting.html): Signature Version 4 with the sandbox access key, scope
``<date>/<region>/ses/aws4_request``; missing → 403 ``MissingAuthenticationTokenException``,
unknown key → 403 ``UnrecognizedClientException``, wrong signature or a timestamp more than
5 minutes off → 403 ``InvalidSignatureException``. Then it is handed to moto's WSGI app
(``moto.moto_server.werkzeug_app.create_backend_app("sesv2")``), called inline.

``SendEmail`` (``POST /v2/email/outbound-emails``) is recorded with From, To/Cc/Bcc, subject,
text/HTML, headers (``Content.Simple`` or ``Content.Raw`` MIME) and ``EmailTags``;
``X-Notify-Delivery-Id`` gives ``delivery_id``. An accepted mail's events are published to SNS
(:mod:`sandbox.ses_events`). ``FromEmailAddress`` must be a verified identity (the sandbox verifies
``example.com`` and the from address in moto at start) else 400 ``MessageRejected``
(docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html). Faults answer SES's REST-JSON
error shape: header ``x-amzn-ErrorType: <Code>`` and body ``{"message": ...}`` (botocore raises
``ClientError`` with that code): ``TooManyRequestsException`` (429), ``MessageRejected`` (400),
``AccountSendingPausedException`` (400), ``SendingPausedException``, ``LimitExceededException``…
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import io
import json
import re
import sys
import uuid
from datetime import datetime, timezone
from email.utils import parseaddr
from typing import Any
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response

from .common import Exchange, ProviderApp, Reject
from .credentials import SES_VERIFIED_DOMAIN
from .ses_events import SentMail, api_tags

SEND_PATH = "/v2/email/outbound-emails"
MAX_SKEW = 300
DEFAULT_MESSAGES = {
    "TooManyRequestsException": "Maximum sending rate exceeded.",
    "MessageRejected": "Email address is not verified.",
    "AccountSendingPausedException": "Sending is paused for this account.",
    "SendingPausedException": "Sending is paused for this configuration set.",
    "LimitExceededException": "Daily message quota exceeded.",
    "InternalFailure": "An internal error occurred.",
    "ServiceUnavailable": "Service is unavailable.",
    "MailFromDomainNotVerifiedException": "MAIL FROM domain is not verified.",
}
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
    r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _uri_encode_path(path: str) -> str:
    # SigV4 canonical URI (non-S3): each segment URI-encoded twice-decoded-once; botocore sends
    # paths already encoded once and signs the encoded form again.
    return quote(path, safe="/~")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        k, _, v = part.partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _mime_parts(raw: bytes) -> dict[str, Any]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out: dict[str, Any] = {"subject": msg.get("subject"), "text": None, "html": None,
                           "headers": {k: str(v) for k, v in msg.items()}}
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and out["text"] is None:
            out["text"] = part.get_content()
        elif ctype == "text/html" and out["html"] is None:
            out["html"] = part.get_content()
    return out


class SesApp(ProviderApp):
    """SES v2 front (SigV4, recording, faults) over moto; see the module docstring."""

    name = "ses"
    default_reasons = {400: "MessageRejected", 403: "AccessDeniedException",
                       429: "TooManyRequestsException", 500: "InternalFailure",
                       503: "ServiceUnavailable"}

    def __init__(self, state) -> None:
        super().__init__(state)
        c = state.creds
        self._key_id = c.ses_access_key_id
        self._secret = c.ses_secret_access_key
        self._region = c.ses_region
        self._from = c.ses_from
        self._verified = {SES_VERIFIED_DOMAIN.lower(), c.ses_from.lower()}
        self._host_port = state.ports.ses
        self._moto = None

    def start(self) -> None:
        """Build moto's SES v2 app and verify the sandbox identities in it (blocking)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.moto_server.werkzeug_app import create_backend_app
        from moto.sesv2.models import sesv2_backends

        self._moto = create_backend_app("sesv2")
        backend = sesv2_backends[DEFAULT_ACCOUNT_ID][self._region]
        for identity in sorted(self._verified):
            created = backend.create_email_identity(identity, None, None, None)
            created.verified_for_sending_status = True

    def close(self) -> None:
        self._moto = None

    # -- errors ------------------------------------------------------------------------------
    def error_body(self, rej: Reject, ex: Exchange) -> tuple[Any, dict[str, str]]:
        code = rej.reason or "InternalFailure"
        return ({"message": rej.message or DEFAULT_MESSAGES.get(code, code)},
                {"x-amzn-errortype": code, "x-amzn-requestid": str(uuid.uuid4())})

    # -- SigV4 -------------------------------------------------------------------------------
    def _check_sigv4(self, request: Request, ex: Exchange) -> None:
        h = ex.headers
        auth = h.get("authorization")
        if not auth:
            raise Reject(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        m = _AUTH_RE.match(auth.strip())
        if not m:
            raise Reject(403, "IncompleteSignatureException",
                         "Authorization header requires 'Credential', 'SignedHeaders' and "
                         "'Signature' parameters.")
        key_id, date, region, service, signed, signature = m.groups()
        if key_id != self._key_id:
            raise Reject(403, "UnrecognizedClientException",
                         "The security token included in the request is invalid.")
        amz_date = h.get("x-amz-date", "")
        try:
            ts = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise Reject(403, "IncompleteSignatureException", "X-Amz-Date is missing or bad.") \
                from None
        if abs((datetime.now(timezone.utc) - ts).total_seconds()) > MAX_SKEW:
            raise Reject(403, "InvalidSignatureException",
                         f"Signature expired: {amz_date} is now earlier or later than 5 minutes "
                         f"from the current time.")
        if region != self._region or service not in ("ses", "email") or amz_date[:8] != date:
            raise Reject(403, "InvalidSignatureException",
                         f"Credential should be scoped to a valid region and service "
                         f"({self._region}/ses).")
        names = signed.split(";")
        if "host" not in names:
            raise Reject(403, "InvalidSignatureException", "'Host' must be a signed header.")
        canonical_headers = "".join(
            f"{n}:{' '.join(h.get(n, '').split())}\n" for n in names)
        payload_hash = h.get("x-amz-content-sha256") or hashlib.sha256(ex.raw_body).hexdigest()
        canonical = "\n".join([
            ex.method,
            _uri_encode_path(request.scope.get("raw_path", b"").decode("latin-1")
                             or request.url.path),
            _canonical_query(request.scope.get("query_string", b"").decode("latin-1")),
            canonical_headers, signed, payload_hash])
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
        k = _hmac(("AWS4" + self._secret).encode("utf-8"), date)
        k = _hmac(k, region)
        k = _hmac(k, service)
        k = _hmac(k, "aws4_request")
        expected = hmac.new(k, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise Reject(403, "InvalidSignatureException",
                         "The request signature we calculated does not match the signature you "
                         "provided. Check your AWS Secret Access Key and signing method.")

    # -- moto --------------------------------------------------------------------------------
    def _call_moto(self, method: str, path: str, query: str, headers: dict[str, str],
                   body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": unquote(path),
            "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self._host_port), "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "https", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": headers.get("content-type", ""),
        }
        for k, v in headers.items():
            if k in ("content-type", "content-length"):
                continue
            environ["HTTP_" + k.upper().replace("-", "_")] = v
        captured: dict[str, Any] = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = response_headers

        result = self._moto(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return captured["status"], captured["headers"], content

    async def _moto_call(self, request: Request, ex: Exchange) -> tuple[int, list, bytes]:
        # Inline on the event loop: a moto call is ~1 ms of pure-Python CPU work, and handing it
        # to a thread only adds GIL hand-offs (measured: slower for every port, not faster).
        return self._call_moto(ex.method, request.url.path,
                               request.scope.get("query_string", b"").decode("latin-1"),
                               ex.headers, ex.raw_body)

    # -- requests --------------------------------------------------------------------------------
    async def handle(self, request: Request, ex: Exchange) -> Response:
        self._check_sigv4(request, ex)
        if request.url.path == SEND_PATH and ex.method == "POST":
            return await self._send(request, ex)
        status, headers, content = await self._moto_call(request, ex)
        ex.status = status
        try:
            ex.response = json.loads(content) if content else None
        except ValueError:
            ex.response = content.decode("utf-8", "replace")[:2000]
        ex.reason = dict((k.lower(), v) for k, v in headers).get("x-amzn-errortype")
        return Response(content, status_code=status,
                        headers={k: v for k, v in headers
                                 if k.lower() not in ("content-length", "server", "date")})

    async def _send(self, request: Request, ex: Exchange) -> Response:
        try:
            doc = json.loads(ex.raw_body or b"{}")
        except ValueError:
            raise Reject(400, "BadRequestException", "Request body is not valid JSON.") from None
        if not isinstance(doc, dict):
            raise Reject(400, "BadRequestException", "Request body must be a JSON object.")
        ex.body = doc
        dest = doc.get("Destination") or {}
        to = list(dest.get("ToAddresses") or [])
        cc = list(dest.get("CcAddresses") or [])
        bcc = list(dest.get("BccAddresses") or [])
        content = doc.get("Content") or {}
        info: dict[str, Any] = {"subject": None, "text": None, "html": None, "headers": {}}
        if "Simple" in content:
            simple = content["Simple"] or {}
            body = simple.get("Body") or {}
            info["subject"] = (simple.get("Subject") or {}).get("Data")
            info["text"] = (body.get("Text") or {}).get("Data")
            info["html"] = (body.get("Html") or {}).get("Data")
            info["headers"] = {hd.get("Name"): hd.get("Value")
                               for hd in simple.get("Headers") or [] if isinstance(hd, dict)}
        elif "Raw" in content:
            try:
                raw = base64.b64decode((content["Raw"] or {}).get("Data") or "")
                info.update(_mime_parts(raw))
            except Exception as exc:
                raise Reject(400, "BadRequestException", f"Raw message is not MIME: {exc}") \
                    from None
            if not to:
                for field in ("to",):
                    value = info["headers"].get(field) or info["headers"].get(field.title())
                    if value:
                        to = [a.strip() for a in value.split(",") if a.strip()]
        lower = {str(k).lower(): v for k, v in info["headers"].items()}
        ex.delivery_id = lower.get("x-notify-delivery-id")
        recipients = to + cc + bcc
        ex.to = recipients[0] if recipients else None
        ex.extra.update(from_address=doc.get("FromEmailAddress"), to=to, cc=cc, bcc=bcc,
                        subject=info["subject"], text=info["text"], html=info["html"],
                        email_headers=info["headers"],
                        configuration_set=doc.get("ConfigurationSetName"),
                        tags=api_tags(doc.get("EmailTags")))

        applied = await self.apply_faults(ex, targets=recipients)

        sender = doc.get("FromEmailAddress")
        if not sender and "Raw" not in content:
            raise Reject(400, "BadRequestException", "FromEmailAddress is required.")
        if sender:
            address = parseaddr(sender)[1].lower()
            if address not in self._verified and address.rsplit("@", 1)[-1] not in self._verified:
                raise Reject(400, "MessageRejected",
                             f"Email address is not verified. The following identities failed "
                             f"the check in region {self._region.upper()}: {sender}")
        if not recipients:
            raise Reject(400, "BadRequestException", "Missing recipients.")
        for addr in recipients:
            if "@" not in parseaddr(addr)[1]:
                raise Reject(400, "BadRequestException", f"Missing final '@domain': {addr}")
        if "Simple" not in content and "Raw" not in content:
            raise Reject(400, "BadRequestException", "Content must have Simple or Raw.")

        status, headers, body = await self._moto_call(request, ex)
        if status != 200:
            code = dict((k.lower(), v) for k, v in headers).get("x-amzn-errortype")
            try:
                msg = json.loads(body).get("message")
            except (ValueError, AttributeError):
                msg = body.decode("utf-8", "replace")[:500]
            raise Reject(status, code or "BadRequestException", msg)
        answer = json.loads(body)
        ex.extra["message_id"] = answer.get("MessageId")
        self._published(answer.get("MessageId"), doc, info, recipients, ex)
        response = Response(body, status_code=200, media_type="application/json",
                            headers={"x-amzn-requestid": str(uuid.uuid4())})
        return self.accept(ex, response, answer, applied)

    def _published(self, message_id: str | None, doc: dict, info: dict, recipients: list[str],
                   ex: Exchange) -> None:
        """Hand an accepted mail to SES event publishing (:mod:`sandbox.ses_events`)."""
        events = self.state.ses_events
        if events is None or not message_id:
            return
        sender = doc.get("FromEmailAddress") or info["headers"].get("From") or ""
        headers = [("From", sender), ("To", ", ".join(ex.extra.get("to") or recipients)),
                   ("Subject", info["subject"] or ""), ("MIME-Version", "1.0"),
                   *((str(k), str(v)) for k, v in info["headers"].items()
                     if str(k).lower() not in ("from", "to", "subject", "mime-version"))]
        tags = dict(ex.extra["tags"])
        if doc.get("ConfigurationSetName"):
            tags["ses:configuration-set"] = [doc["ConfigurationSetName"]]
        delivery_id = (tags.get("delivery_id") or [None])[0] or ex.delivery_id
        events.accepted(SentMail(message_id, "ses", sender, recipients, headers, info["subject"], tags,
                                 delivery_id))

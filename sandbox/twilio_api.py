"""Twilio Programmable Messaging REST emulator (``api.twilio.com/2010-04-01``).

Rules from twilio.com/docs/messaging/api/message-resource, twilio.com/docs/api/errors and
twilio.com/docs/usage/webhooks/webhooks-security:

- HTTP Basic with the account SID and auth token, or with an API key of the account (``SK…`` SID
  and its secret; twilio.com/docs/usage/requests-to-twilio), else 401 code 20003
  (``Authenticate``): the sandbox's account and API key, or ones registered with ``POST
  /twilio/accounts`` (sandbox.accounts). The record's ``extra.account_sid`` names the account
  used and ``extra.auth`` the credential (``"auth_token"`` or ``"api_key:SK…"``). A path account
  other than the authenticated one → 404 code 20404 with the auth token; with an API key, which
  only ever authenticates for its own account, → 401 code 20003.
- ``POST /2010-04-01/Accounts/<sid>/Messages.json`` (form): ``To`` required (21604) in E.164
  (21211); ``From`` or ``MessagingServiceSid`` required (21603); ``From`` must be the account's
  number (21606) and ``MessagingServiceSid`` its service (21701), each account its own; ``Body`` required without
  ``MediaUrl`` (21602) and ≤ 1600 characters (21617); ``StatusCallback`` an http(s) URL (21609);
  recipients that texted STOP → 21610. Twilio's magic test numbers as ``To``: +15005550001
  (21211), +15005550002 (21612), +15005550003 (21408), +15005550004 (21610), +15005550009
  (21614).
- 201 with the Message resource (``sid`` ``SM`` + 32 hex, ``status`` ``queued`` — ``accepted``
  with a Messaging Service —, ``num_segments`` as a string, RFC 2822 dates …). Encoding and
  segments (:func:`channels.sms_segments.sms_info`, the product's counter) go to the record's
  ``extra``; a media-only message (MMS, empty ``Body``) counts as one segment.
- Status callbacks: when ``StatusCallback`` is given, ``sent`` then ``delivered`` are POSTed to it
  (form-encoded ``MessageSid``, ``MessageStatus``, ``SmsSid``, ``SmsStatus``, ``To``, ``From``,
  ``AccountSid``, ``ApiVersion`` …) with ``X-Twilio-Signature`` computed by
  ``twilio.request_validator.RequestValidator`` with the sending account's auth token. Only
  loopback callback URLs and hosts listed in ``--callback-hosts`` are called; any other URL is
  refused (never called) and the attempt's ``error`` says why (``GET /twilio/messages`` →
  ``callbacks``).
- ``GET .../Messages.json`` (filters ``To``, ``From``; ``PageSize``) and
  ``GET .../Messages/<sid>.json``.

Errors: ``{"code", "message", "more_info", "status"}``.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
from starlette.requests import Request
from starlette.responses import Response
from twilio.request_validator import RequestValidator

from channels.sms_segments import sms_info

from .accounts import TwilioAccount
from .common import Exchange, ProviderApp, Reject, callback_allowed, json_response
from .faults import Applied

log = logging.getLogger("sandbox.twilio")
API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_BASE = re.compile(r"^/2010-04-01/Accounts/([^/]+)/(Messages\.json|Messages/([^/]+)\.json)$")
MAGIC_TO = {"+15005550001": 21211, "+15005550002": 21612, "+15005550003": 21408,
            "+15005550004": 21610, "+15005550009": 21614}
MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service unavailable",
    21211: "Invalid 'To' Phone Number",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
           "'To' number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone number "
           "for this destination/account.",
    21609: "Invalid StatusCallback url",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number is not currently reachable via SMS",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21701: "The Messaging Service Sid is invalid",
}
DEFAULT_CODES = {400: 21211, 401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
START_WORDS = {"START", "YES", "UNSTOP"}


def _rfc2822(ts: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(ts, timezone.utc))


def _err(status: int, code: int, message: str | None = None) -> Reject:
    return Reject(status, str(code), message or MESSAGES.get(code, ""), code=code)


class TwilioApp(ProviderApp):
    """Twilio Messages API emulator; see the module docstring."""

    name = "twilio"

    def __init__(self, state) -> None:
        super().__init__(state)
        self.messages: dict[str, dict[str, Any]] = {}
        self.callbacks: list[dict[str, Any]] = []
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        state.twilio = self

    # -- errors ------------------------------------------------------------------------------
    def error_body(self, rej: Reject, ex: Exchange) -> tuple[Any, dict[str, str]]:
        code = rej.code or DEFAULT_CODES.get(rej.status, 20500)
        headers = {}
        if rej.status == 401:
            headers["www-authenticate"] = 'Basic realm="Twilio API"'
        return {"code": code, "message": rej.message or MESSAGES.get(code, ""),
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": rej.status}, headers

    def fault_reject(self, applied: Applied) -> Reject:
        rule = applied.error
        assert rule is not None
        code = rule.code
        if code is None and rule.reason and rule.reason.isdigit():
            code = int(rule.reason)
        code = code or DEFAULT_CODES.get(rule.status, 20500)
        return Reject(rule.status, str(code), rule.message or MESSAGES.get(code, ""), code=code,
                      retry_after=rule.retry_after, fault=rule.id)

    # -- routing ---------------------------------------------------------------------------------
    def _account(self, authorization: str | None) -> tuple[TwilioAccount, str]:
        """The account HTTP Basic ``authorization`` authenticates and the credential that did
        (:meth:`sandbox.accounts.Accounts.twilio_login`); 401 20003 otherwise."""
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            raise _err(401, 20003) from None
        login = self.state.accounts.twilio_login(user, password) if scheme.lower() == "basic" else None
        if login is None:
            raise _err(401, 20003)
        return login

    async def handle(self, request: Request, ex: Exchange) -> Response:
        m = _BASE.match(request.url.path)
        account, credential = self._account(ex.headers.get("authorization"))
        ex.extra.update(account_sid=account.account_sid, auth=credential)
        if m and m.group(1) != account.account_sid and credential != "auth_token":
            raise _err(401, 20003)  # an API key authenticates for its own account only
        if not m or m.group(1) != account.account_sid:
            raise _err(404, 20404, f"The requested resource {request.url.path} was not found")
        if m.group(3):
            if ex.method != "GET":
                raise _err(405, 20004, "Method not allowed")
            msg = self.messages.get(m.group(3))
            if msg is None or msg["account_sid"] != account.account_sid:
                raise _err(404, 20404, f"The requested resource {request.url.path} was not found")
            ex.status, ex.response = 200, {"sid": msg["sid"], "status": msg["status"]}
            return json_response(msg)
        if ex.method == "GET":
            return self._list(request, ex, account)
        if ex.method != "POST":
            raise _err(405, 20004, "Method not allowed")
        return await self._create(ex, account)

    def _list(self, request: Request, ex: Exchange, account: TwilioAccount) -> Response:
        q = request.query_params
        items = [i for i in reversed(self.messages.values()) if i["account_sid"] == account.account_sid]
        if q.get("To"):
            items = [i for i in items if i["to"] == q["To"]]
        if q.get("From"):
            items = [i for i in items if i["from"] == q["From"]]
        try:
            size = max(1, min(int(q.get("PageSize", 50) or 50), 1000))
            page = max(0, int(q.get("Page", 0) or 0))
        except ValueError:
            raise _err(400, 20001, "PageSize and Page must be integers") from None
        chunk = items[page * size:(page + 1) * size]
        uri = f"/{API_VERSION}/Accounts/{account.account_sid}/Messages.json"
        more = (page + 1) * size < len(items)
        body = {
            "messages": chunk, "end": page * size + max(len(chunk) - 1, 0),
            "first_page_uri": f"{uri}?PageSize={size}&Page=0",
            "next_page_uri": f"{uri}?PageSize={size}&Page={page + 1}" if more else None,
            "page": page, "page_size": size, "previous_page_uri":
                f"{uri}?PageSize={size}&Page={page - 1}" if page else None,
            "start": page * size, "uri": f"{uri}?PageSize={size}&Page={page}",
        }
        ex.status, ex.response = 200, {"count": len(chunk)}
        return json_response(body)

    async def _create(self, ex: Exchange, account: TwilioAccount) -> Response:
        form_multi = parse_qs(ex.raw_body.decode("utf-8", "replace"), keep_blank_values=True)
        form = {k: v[-1] for k, v in form_multi.items()}
        ex.body = form
        to = form.get("To", "").strip()
        ex.to = to or None
        callback = form.get("StatusCallback")
        if callback:
            qs = parse_qs(urlsplit(callback).query)
            if qs.get("delivery_id"):
                ex.delivery_id = qs["delivery_id"][0]

        applied = await self.apply_faults(ex)

        if not to:
            raise _err(400, 21604)
        if not _E164.match(to):
            raise _err(400, 21211, f"Invalid 'To' Phone Number: {to}")
        sender = form.get("From")
        service = form.get("MessagingServiceSid")
        if not sender and not service:
            raise _err(400, 21603)
        if sender and sender != account.from_number:
            raise _err(400, 21606)
        if service and service != account.messaging_service_sid:
            raise _err(400, 21701)
        body = form.get("Body", "")
        if not body and not form.get("MediaUrl"):
            raise _err(400, 21602)
        if len(body) > MAX_BODY_CHARS:
            raise _err(400, 21617)
        if callback:
            parts = urlsplit(callback)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _err(400, 21609)
        if to in MAGIC_TO:
            raise _err(400, MAGIC_TO[to])
        if to in self.state.opted_out:
            raise _err(400, 21610)

        info = sms_info(body)
        segments = info["segments"] or 1  # media only (MMS): one message, no text segments
        now = time.time()
        sid = "SM" + secrets.token_hex(16)
        uri = f"/{API_VERSION}/Accounts/{account.account_sid}/Messages/{sid}.json"
        resource = {
            "account_sid": account.account_sid, "api_version": API_VERSION, "body": body,
            "date_created": _rfc2822(now), "date_sent": None, "date_updated": _rfc2822(now),
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": sender, "messaging_service_sid": service,
            "num_media": str(len(form_multi.get("MediaUrl", []))),
            "num_segments": str(segments), "price": None, "price_unit": "USD",
            "sid": sid, "status": "accepted" if service and not sender else "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": to, "uri": uri,
        }
        self.messages[sid] = resource
        if len(self.messages) > 100_000:
            self.messages.pop(next(iter(self.messages)))
        final = "delivered"
        error_code = None
        if applied is not None and applied.callback is not None:
            final = applied.callback.callback_status
            error_code = applied.callback.error_code or 30003
        ex.extra.update(segments=segments, encoding=info["encoding"],
                        units=info["units"], sid=sid, final_status=final,
                        status_callback=callback)
        self._spawn(self._progress(sid, callback, final, error_code))
        return self.accept(ex, json_response(resource, 201), resource, applied)

    # -- status progression and callbacks -----------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: the callbacks are most of the sandbox's own work under load
        # (two per message), and on a small machine the sandbox shares the CPU with the system
        # it stands in for.
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=False, limit=64),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=10.0), headers={"User-Agent": "TwilioProxy/1.1"})
        return self._http

    async def _progress(self, sid: str, callback: str | None, final: str,
                        error_code: int | None) -> None:
        d_sent, d_final = self.state.callback_delays
        await asyncio.sleep(d_sent)
        await self._set_status(sid, "sent", callback, None)
        await asyncio.sleep(max(d_final - d_sent, 0))
        await self._set_status(sid, final, callback, error_code)

    async def _set_status(self, sid: str, status: str, callback: str | None,
                          error_code: int | None) -> None:
        msg = self.messages.get(sid)
        if msg is None:
            return
        now = time.time()
        msg["status"] = status
        msg["date_updated"] = _rfc2822(now)
        if status == "sent":
            msg["date_sent"] = _rfc2822(now)
        if error_code:
            msg["error_code"] = error_code
            msg["error_message"] = "Unknown destination handset" if error_code == 30003 else None
        if not callback:
            return
        account = self.state.accounts.twilio_account(msg["account_sid"])
        if account is None:
            return
        params = {
            "AccountSid": account.account_sid, "ApiVersion": API_VERSION, "From": msg["from"] or "",
            "MessageSid": sid, "MessageStatus": status, "SmsSid": sid, "SmsStatus": status,
            "To": msg["to"],
        }
        if msg["messaging_service_sid"]:
            params["MessagingServiceSid"] = msg["messaging_service_sid"]
        if error_code:
            params["ErrorCode"] = str(error_code)
        if status == "delivered":
            params["RawDlrDoneDate"] = datetime.now(timezone.utc).strftime("%y%m%d%H%M")
        await self.post_signed(callback, params, kind="status", sid=sid, account=account)

    async def post_signed(self, url: str, params: dict[str, str], *, kind: str,
                          sid: str | None = None, account: TwilioAccount | None = None) -> dict[str, Any]:
        """POST ``params`` form-encoded to ``url`` signed like Twilio (``X-Twilio-Signature``,
        with ``account``'s auth token: the sandbox's own account by default).

        Returns and keeps a log entry ``{"kind", "sid", "url", "params", "status", "error"}``.
        Only loopback hosts and the ``--callback-hosts`` allowlist are called (``error`` says so
        otherwise).
        """
        entry: dict[str, Any] = {"kind": kind, "sid": sid, "url": url, "params": params,
                                 "status": None, "error": None, "time": time.time()}
        self.callbacks.append(entry)
        if len(self.callbacks) > 10_000:
            del self.callbacks[:1000]
        if not self._callback_allowed(url):
            allowed = self.state.callback_hosts
            entry["error"] = (
                f"only loopback and --callback-hosts ({', '.join(sorted(allowed))}) callback "
                f"URLs are called by the sandbox" if allowed
                else "only loopback callback URLs are called by the sandbox")
            return entry
        account = account or self.state.accounts.default_twilio
        signature = RequestValidator(account.auth_token).compute_signature(url, params)
        try:
            async with self._client().post(
                    url, data=urlencode(params).encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded",
                             "X-Twilio-Signature": signature,
                             "I-Twilio-Idempotency-Token": secrets.token_hex(16)}) as resp:
                entry["status"] = resp.status
                entry["response"] = (await resp.text(errors="replace"))[:2000]
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry

    def _callback_allowed(self, url: str) -> bool:
        """Loopback, or a host of the ``--callback-hosts`` allowlist (:func:`callback_allowed`)."""
        return callback_allowed(url, self.state.callback_hosts)

    async def inbound(self, sender: str, body: str, url: str, to: str | None = None
                      ) -> dict[str, Any]:
        """Simulate an inbound SMS to the messaging webhook ``url`` (signed).

        ``STOP``-type keywords opt ``sender`` out (later sends answer 21610, as Twilio's Advanced
        Opt-Out does); ``START``/``YES``/``UNSTOP`` opt back in.
        """
        word = body.strip().upper()
        if word in STOP_WORDS:
            self.state.opted_out.add(sender)
        elif word in START_WORDS:
            self.state.opted_out.discard(sender)
        sid = "SM" + secrets.token_hex(16)
        account = self.state.accounts.default_twilio
        params = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid,
                  "AccountSid": account.account_sid, "MessagingServiceSid": account.messaging_service_sid,
                  "From": sender, "To": to or account.from_number, "Body": body, "NumMedia": "0",
                  "NumSegments": "1", "SmsStatus": "received", "ApiVersion": API_VERSION}
        if word in STOP_WORDS:
            params["OptOutType"] = "STOP"
        elif word in START_WORDS:
            params["OptOutType"] = "START"
        entry = await self.post_signed(url, params, kind="inbound", sid=sid)
        return {**entry, "opted_out": sender in self.state.opted_out}

    async def aclose(self) -> None:
        """Cancel pending callbacks and close the HTTP client."""
        for t in list(self._tasks):
            t.cancel()
        if self._http is not None:
            await self._http.close()

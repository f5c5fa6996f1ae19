"""Control API (plain HTTP/1.1 JSON on the base port); contract in sandbox/README.md.

Routes:

- ``GET /health`` → ``{"ok": true}``; ``GET /config`` → the ``sandbox.json`` document.
- ``GET /records?provider=&since=&accepted=&to=&delivery_id=`` → ``{"records", "last_seq"}``;
  ``DELETE /records``.
- ``GET /inbox?provider=&to=`` → ``{"messages": [...]}`` (see :mod:`sandbox.inbox`).
- ``POST /faults`` (a rule, see :mod:`sandbox.faults`) → the rule with ``id`` (201);
  ``GET /faults`` → ``{"faults": [...]}``; ``DELETE /faults``; ``DELETE /faults/<id>``.
- ``POST /webpush/subscriptions`` (optional ``{"application_server_key": "..."}``; default: the
  sandbox's VAPID public key; ``null`` = unrestricted) → ``{"endpoint", "expirationTime": null,
  "keys": {"p256dh", "auth"}}`` (201).
- ``POST /dead-tokens`` ``{"provider", "token"}`` → ``{"provider", "token", "dead_since"}``;
  ``GET /dead-tokens``; ``DELETE /dead-tokens`` (revive all).
- ``GET /twilio/messages`` → Twilio message resources and callback attempts;
  ``POST /twilio/inbound`` ``{"from", "body", "url", "to"?}`` → posts a signed inbound SMS to the
  product's webhook (STOP/START keywords change the opt-out list that answers 21610).
- ``POST /sns/subscriptions`` ``{"endpoint", "signature_version"?: "1" | "2"}`` → the
  subscription after its ``SubscriptionConfirmation`` was POSTed (201; ``status``
  ``confirmed`` once the endpoint GOT its ``SubscribeURL``); ``GET /sns/subscriptions``;
  ``DELETE /sns/subscriptions`` (each gets an ``UnsubscribeConfirmation``);
  ``GET /sns/deliveries`` → the SNS messages POSTed and the endpoints' answers (see
  :mod:`sandbox.sns`).
- ``POST /ses/events`` ``{"message_id" | "delivery_id", "event_type", "format"?, "repeat"?, ...}``
  → publishes one SES event about an accepted mail (see :mod:`sandbox.ses_events`).
- ``GET /apns/provider-tokens`` → the policy and, per key id, every distinct provider token seen
  (see :mod:`sandbox.provider_tokens`); ``DELETE /apns/provider-tokens`` forgets them.
  ``PUT /apns/token-policy`` ``{"strict": bool, "min_interval"?: seconds}`` → the policy;
  ``GET /apns/token-policy``.
- ``POST /apns/keys`` ``{"key_id", "team_id", "public_key" (PEM), "topic"?}`` → the key (201):
  provider tokens signed by it are accepted too (a second app's key); ``POST /twilio/accounts``
  ``{"account_sid", "auth_token", "api_key_sid"?, "api_key_secret"?, "from_number"?,
  "messaging_service_sid"?}`` → the account without its token and key secret (201): a second
  Twilio account, optionally with an API key; ``GET /accounts`` → every key and account
  (see :mod:`sandbox.accounts`).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .accounts import AccountError
from .credentials import sandbox_json
from .faults import FaultError, parse_fault
from .inbox import build_inbox
from .records import PROVIDERS
from .ses_events import EventError

#: Options of ``POST /ses/events`` beside the mail, the type, the format and ``repeat``
#: (keyword arguments of sandbox.ses_events.SesEvents.record).
EVENT_OPTIONS = {"bounce_type", "bounce_subtype", "feedback_type", "link", "reason", "delay_type"}


def _bool(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.lower() in ("1", "true", "yes")


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise _BadRequest("body is not JSON") from None


class _BadRequest(Exception):
    pass


def build_control_app(state) -> Starlette:
    """The control API as a Starlette app bound to ``state``."""

    async def health(request: Request):
        return JSONResponse({"ok": True})

    async def config(request: Request):
        return JSONResponse(sandbox_json(state.creds))

    async def records(request: Request):
        if request.method == "DELETE":
            state.records.clear()
            return JSONResponse({"ok": True})
        q = request.query_params
        provider = q.get("provider") or None
        if provider is not None and provider not in PROVIDERS:
            return JSONResponse({"error": f"provider must be one of {list(PROVIDERS)}"}, 400)
        try:
            since = int(q["since"]) if q.get("since") else None
        except ValueError:
            return JSONResponse({"error": "since must be an integer"}, 400)
        items, last = state.records.query(provider=provider, since=since,
                                          accepted=_bool(q.get("accepted")),
                                          to=q.get("to") or None,
                                          delivery_id=q.get("delivery_id") or None)
        return JSONResponse({"records": items, "last_seq": last})

    async def inbox(request: Request):
        q = request.query_params
        messages = build_inbox(state.records.all(), provider=q.get("provider") or None,
                               to=q.get("to") or None)
        return JSONResponse({"messages": messages})

    async def faults(request: Request):
        if request.method == "GET":
            return JSONResponse({"faults": state.faults.list()})
        if request.method == "DELETE":
            return JSONResponse({"deleted": state.faults.delete(None)})
        try:
            rule = parse_fault(await _json(request))
        except (FaultError, _BadRequest) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(state.faults.add(rule).to_dict(), 201)

    async def fault_one(request: Request):
        try:
            rule_id = int(request.path_params["rule_id"])
        except ValueError:
            return JSONResponse({"error": "id must be an integer"}, 400)
        deleted = state.faults.delete(rule_id)
        return JSONResponse({"deleted": deleted}, 200 if deleted else 404)

    async def subscriptions(request: Request):
        try:
            body = await _json(request)
        except _BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        key = body.get("application_server_key", state.creds.vapid_public_key) \
            if isinstance(body, dict) else state.creds.vapid_public_key
        sub = state.subscriptions.create(key.rstrip("=") if key else None)
        return JSONResponse({"endpoint": state.webpush_endpoint(sub.id), "expirationTime": None,
                             "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}, 201)

    async def dead_tokens(request: Request):
        if request.method == "GET":
            return JSONResponse(state.dead.as_dict())
        if request.method == "DELETE":
            state.dead.revive()
            return JSONResponse({"ok": True})
        try:
            body = await _json(request)
        except _BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        provider, token = body.get("provider"), body.get("token")
        if not isinstance(token, str) or not token:
            return JSONResponse({"error": "token is required"}, 400)
        if provider == "webpush":
            token = state.webpush_id(token)
        try:
            since = state.dead.kill(provider, token)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"provider": provider, "token": token, "dead_since": since})

    async def twilio_messages(request: Request):
        tw = state.twilio
        return JSONResponse({"messages": list(tw.messages.values()),
                             "callbacks": tw.callbacks[-1000:],
                             "opted_out": sorted(state.opted_out)})

    async def twilio_inbound(request: Request):
        try:
            body = await _json(request)
        except _BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if not body.get("from") or not body.get("url") or body.get("body") is None:
            return JSONResponse({"error": "from, body and url are required"}, 400)
        result = await state.twilio.inbound(body["from"], body["body"], body["url"],
                                            body.get("to"))
        return JSONResponse(result)

    async def sns_subscriptions(request: Request):
        sns = state.sns
        if request.method == "GET":
            return JSONResponse({"subscriptions": list(sns.subscriptions.values())})
        if request.method == "DELETE":
            entries = [await sns.unsubscribe(arn) for arn in list(sns.subscriptions)]
            return JSONResponse({"deleted": sum(1 for e in entries if e is not None)})
        try:
            body = await _json(request)
            if not isinstance(body, dict) or not isinstance(body.get("endpoint"), str):
                raise _BadRequest("endpoint (a URL) is required")
            sub = await sns.subscribe(body["endpoint"], str(body.get("signature_version") or "1"))
        except (_BadRequest, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(sub, 201)

    async def sns_deliveries(request: Request):
        return JSONResponse({"deliveries": state.sns.deliveries[-1000:]})

    async def ses_events(request: Request):
        try:
            body = await _json(request)
        except _BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "a JSON object is expected"}, 400)
        unknown = set(body) - EVENT_OPTIONS - {"message_id", "delivery_id", "event_type", "format", "repeat"}
        if unknown:
            return JSONResponse({"error": f"unknown fields: {sorted(unknown)}"}, 400)
        mail = state.ses_events.find(body.get("message_id"), body.get("delivery_id"))
        if mail is None:
            return JSONResponse({"error": "no accepted mail with that message_id / delivery_id"}, 404)
        try:
            repeat = int(body.get("repeat") or 1)
            entries = await state.ses_events.emit(
                mail, str(body.get("event_type") or ""), fmt=str(body.get("format") or "event"),
                repeat=repeat, **{k: str(v) for k, v in body.items() if k in EVENT_OPTIONS})
        except (EventError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"message_id": mail.message_id, "deliveries": entries})

    async def apns_provider_tokens(request: Request):
        if request.method == "DELETE":
            state.apns_tokens.clear()
            return JSONResponse({"ok": True})
        return JSONResponse(state.apns_tokens.as_dict())

    async def apns_token_policy(request: Request):
        if request.method == "GET":
            return JSONResponse(state.apns_tokens.policy())
        try:
            body = await _json(request)
        except _BadRequest as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("strict"), bool):
            return JSONResponse({"error": "strict (true or false) is required"}, 400)
        interval = body.get("min_interval", 1200)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            return JSONResponse({"error": "min_interval must be a number of seconds"}, 400)
        try:
            return JSONResponse(state.apns_tokens.set_policy(body["strict"], interval))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)

    async def accounts(request: Request):
        if request.method == "GET":
            return JSONResponse(state.accounts.as_dict())
        try:
            body = await _json(request)
            if request.url.path == "/apns/keys":
                return JSONResponse(state.accounts.add_apns_key(body).as_dict(), 201)
            return JSONResponse(state.accounts.add_twilio_account(body).as_dict(), 201)
        except (_BadRequest, AccountError) as exc:
            return JSONResponse({"error": str(exc)}, 400)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/config", config, methods=["GET"]),
        Route("/records", records, methods=["GET", "DELETE"]),
        Route("/inbox", inbox, methods=["GET"]),
        Route("/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/faults/{rule_id}", fault_one, methods=["DELETE"]),
        Route("/webpush/subscriptions", subscriptions, methods=["POST"]),
        Route("/dead-tokens", dead_tokens, methods=["GET", "POST", "DELETE"]),
        Route("/twilio/messages", twilio_messages, methods=["GET"]),
        Route("/twilio/inbound", twilio_inbound, methods=["POST"]),
        Route("/sns/subscriptions", sns_subscriptions, methods=["GET", "POST", "DELETE"]),
        Route("/sns/deliveries", sns_deliveries, methods=["GET"]),
        Route("/ses/events", ses_events, methods=["POST"]),
        Route("/apns/provider-tokens", apns_provider_tokens, methods=["GET", "DELETE"]),
        Route("/apns/token-policy", apns_token_policy, methods=["GET", "PUT"]),
        Route("/apns/keys", accounts, methods=["POST"]),
        Route("/twilio/accounts", accounts, methods=["POST"]),
        Route("/accounts", accounts, methods=["GET"]),
    ]
    return Starlette(routes=routes)

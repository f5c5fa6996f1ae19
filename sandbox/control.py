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
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .credentials import sandbox_json
from .faults import FaultError, parse_fault
from .inbox import build_inbox
from .records import PROVIDERS


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
    ]
    return Starlette(routes=routes)

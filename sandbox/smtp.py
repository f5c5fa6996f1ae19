"""SMTP sink (aiosmtpd ``Controller`` on its own thread) that records every message.

Each ``DATA`` becomes one ``smtp`` record: ``body`` ``{"mail_from", "rcpt_tos", "subject", "text",
"html"}``, ``headers`` the message headers, ``to`` the first recipient, ``delivery_id`` the
``X-Notify-Delivery-Id`` header. Fault rules for ``smtp`` use ``status`` as the SMTP reply code
(e.g. 421, 451, 550) and ``reason`` as its text; ``latency_ms`` delays the reply.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time

from aiosmtpd.controller import Controller

from .common import Exchange


class RecordingHandler:
    """aiosmtpd handler: records messages into the sandbox state and applies faults."""

    def __init__(self, state) -> None:
        self.state = state

    async def handle_DATA(self, server, session, envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        headers = {k: str(v) for k, v in msg.items()}
        text = html = None
        for part in msg.walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            try:
                content = part.get_content()
            except Exception:  # undecodable part: keep raw
                content = part.get_payload()
            if ctype == "text/plain" and text is None:
                text = content
            elif ctype == "text/html" and html is None:
                html = content
        rcpts = list(envelope.rcpt_tos)
        ex = Exchange("smtp", "DATA", "smtp", None, headers)
        ex.time = time.time()
        ex.body = {"mail_from": envelope.mail_from, "rcpt_tos": rcpts,
                   "subject": msg.get("subject"), "text": text, "html": html}
        ex.to = rcpts[0] if rcpts else None
        lower = {k.lower(): v for k, v in headers.items()}
        ex.delivery_id = lower.get("x-notify-delivery-id")
        ex.extra = {"size": len(raw), "peer": str(session.peer[0]) if session.peer else None}
        applied = self.state.faults.take("smtp", rcpts)
        reply = "250 2.0.0 Message accepted for delivery"
        ex.status, ex.accepted = 250, True
        if applied is not None:
            ex.extra["faults"] = applied.ids
            if applied.latency_ms:
                await asyncio.sleep(applied.latency_ms / 1000.0)
            rule = applied.error
            if rule is not None:
                text_reason = rule.reason or rule.message or "Requested action aborted"
                reply = f"{rule.status} {text_reason}"
                ex.status, ex.reason = rule.status, text_reason
                ex.accepted = bool(rule.after_accept)
                ex.extra["fault_id"] = rule.id
        ex.response = {"reply": reply}
        self.state.records.add(ex.to_record())
        return reply


def start_smtp(state, host: str, port: int) -> Controller:
    """Start the SMTP server thread on ``host:port`` (blocks until it accepts connections)."""
    controller = Controller(RecordingHandler(state), hostname=host, port=port,
                            ready_timeout=10.0, data_size_limit=40 * 1024 * 1024)
    controller.start()
    return controller



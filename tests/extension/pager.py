"""A minimal channel that is not part of notify: "pager", a device channel posting JSON to one
HTTP endpoint. It exists to prove that a channel is added by an adapter class and configuration
alone (``NOTIFY_EXTRA_PROVIDERS=tests.extension.pager:PagerChannel``), with no change under
notify/."""

from __future__ import annotations

import re
from typing import Any, Mapping

import requests

from channels.base import AddressKind, Channel, InvalidAddress, Message, Result, RetryDefaults, Setting
from channels.errors import InvalidMessage
from channels.http import RequestsTransport, http_result, json_bytes, response_json, retryless_session

_PAGER_ID = re.compile(r"^PG[0-9]{6}$")


class PagerChannel(RequestsTransport, Channel):
    """POST ``{"pager", "text", "delivery_id"}`` to ``url``; 200 → SENT, 410 → DEAD_TOKEN."""

    name = "pager"
    provider = "pager"
    label = "Pager"
    content_group = "push"
    address_kind = AddressKind.DEVICE_TOKEN
    platform = "pager"
    retry = RetryDefaults(max_attempts=3, max_age=600)
    settings = (Setting("url", "NOTIFY_PAGER_URL", required=True, doc="the pager gateway"),)

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        self.session = retryless_session({})

    @classmethod
    def check_content(cls, content: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        text = content.get("body") or content.get("title") or ""
        if not text:
            raise InvalidMessage("empty_content", "a page needs a title or a body")
        if len(text) > 80:
            raise InvalidMessage("page_too_long", f"{len(text)} characters > 80")

    @classmethod
    def validate_address(cls, value: Any, config: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not _PAGER_ID.match(value):
            raise InvalidAddress("pager ids look like PG123456")
        return value

    def build_payload(self, message: Message) -> bytes:
        self.check_content(message.content, self.config)
        return json_bytes({"pager": message.to, "delivery_id": message.delivery_id,
                           "text": message.content.get("body") or message.content.get("title")})

    def post(self, message: Message, payload: bytes) -> requests.Response:
        return self.session.post(self.config["url"], data=payload, timeout=5,
                                 headers={"Content-Type": "application/json"})

    def classify(self, answer: requests.Response) -> Result:
        body = response_json(answer.content)
        return http_result(answer.status_code, dead_token=answer.status_code == 410,
                           provider_message_id=(body or {}).get("id") if isinstance(body, dict) else None,
                           raw={"body": body})

    def close(self) -> None:
        self.session.close()

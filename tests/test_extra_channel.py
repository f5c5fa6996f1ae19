"""A channel is added by an adapter class and configuration alone: the "pager" channel of
tests/extension/pager.py, registered through NOTIFY_EXTRA_PROVIDERS for the whole stack, gets
its device platform at the API, its content check, its own queue and worker pool, and its
outcomes recorded, with no change under notify/."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devtools import demo
from notify.models import Delivery, DeliveryLog
from tests.conftest import wait_until
from tests.helpers import queue_depth

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

RECEIVED: list[dict] = []


class _Gateway(BaseHTTPRequestHandler):
    """The pager gateway: records each page; pager PG000410 is gone (410)."""

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RECEIVED.append(body)
        status = 410 if body["pager"] == "PG000410" else 200
        answer = json.dumps({"id": f"page-{len(RECEIVED)}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


GATEWAY = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
STACK_ENV = {"NOTIFY_EXTRA_PROVIDERS": "tests.extension.pager:PagerChannel",
             "NOTIFY_PAGER_URL": f"http://127.0.0.1:{GATEWAY.server_port}/pages"}
STACK_EXTRA_CHANNELS = ("pager",)


@pytest.fixture(scope="module", autouse=True)
def gateway():
    thread = threading.Thread(target=GATEWAY.serve_forever, daemon=True)
    thread.start()
    yield GATEWAY
    GATEWAY.shutdown()


def test_an_extra_channel_sends_end_to_end(stack, control):
    key = demo.create_app("pager")[1]
    status, body = demo.call(stack.api_url, key, "PUT", "/api/v1/recipients/on-call", {"name": "On call"})
    assert status == 201, body
    # The API knows the new platform and lets the adapter validate the address.
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/recipients/on-call/devices",
                             {"platform": "pager", "token": "not-a-pager"})
    assert status == 400 and "PG123456" in json.dumps(body["error"]["fields"]), body
    for token in ("PG123456", "PG000410"):
        status, body = demo.call(stack.api_url, key, "POST", "/api/v1/recipients/on-call/devices",
                                 {"platform": "pager", "token": token})
        assert status == 201, body

    # The adapter's content limit applies at the API: nothing is written.
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
        "recipient": "on-call", "channels": ["pager"], "content": {"push": {"body": "x" * 81}}})
    assert status == 422 and body["error"]["code"] == "page_too_long", body
    assert not Delivery.objects.filter(channel="pager").exists()

    status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
        "recipient": "on-call", "content": {"push": {"title": "Disk full", "body": "db-3 at 97%"}}})
    assert status == 202, accepted
    assert [d["channel"] for d in accepted["deliveries"]] == ["pager", "pager"]
    ids = {d["to"]: d["id"] for d in accepted["deliveries"]}

    def finished():
        rows = {str(d.id): d for d in Delivery.objects.filter(id__in=ids.values())}
        return rows if all(d.status in ("sent", "failed") for d in rows.values()) else None

    rows = wait_until(finished, timeout=30, message="the pages to be sent")
    sent, gone = rows[ids["PG123456"]], rows[ids["PG000410"]]
    assert (sent.status, sent.provider, sent.provider_message_id) == ("sent", "pager", sent.provider_message_id)
    assert sent.provider_message_id.startswith("page-")
    # Outcomes are the service's: the dead pager is deactivated like a dead APNs token.
    assert (gone.status, gone.device.active) == ("failed", False)
    pages = [p for p in RECEIVED if p["delivery_id"] in ids.values()]
    assert sorted(p["pager"] for p in pages) == ["PG000410", "PG123456"]
    assert {p["text"] for p in pages} == {"db-3 at 97%"}
    assert list(DeliveryLog.objects.filter(delivery_id=sent.id).order_by("id").values_list("to_status", flat=True)) \
        == ["sending", "sent"]
    # Its own queue (declared from the registry by the relay and its worker pool) carried it.
    assert queue_depth("pager") == 0

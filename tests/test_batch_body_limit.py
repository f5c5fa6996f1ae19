"""The batch endpoint's body limit fits a full batch (NOTIFY_BATCH_MAX_ITEMS items at the
NOTIFY_BATCH_ITEM_BYTES allowance), while every other endpoint keeps NOTIFY_MAX_BODY_BYTES; a
body over either is a 413 ``body_too_large`` before anything is parsed or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from notify.models import Notification

from tests.helpers import db_counts

pytestmark = pytest.mark.django_db(transaction=True)

USER = "batch-limit"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def recipient(api):
    r = api.put(f"/api/v1/recipients/{USER}", {"phone": "+4915123456789", "email": "ana@example.com"}, format="json")
    assert r.status_code == 201, r.content
    return USER


def post_text(api, path: str, text: str):
    return api.generic("POST", path, text.encode(), content_type="application/json")


def minimal(i: int) -> dict:
    """A send with the least a real one has: a recipient, a one-line SMS, its own event id."""
    return {"recipient": USER, "channels": ["sms"], "content": {"sms": {"body": f"Your sign-in code is {i:06d}"}},
            "event_id": f"min-{i:06d}"}


def realistic(i: int) -> dict:
    """A send by template as a shop's order system makes it: data for the template, its own event id."""
    return {"recipient": USER, "template": "order-shipped", "priority": "high", "ttl": 6 * 3600,
            "event_id": f"order-A-{100000 + i}-shipped-2025-06-01T09:30:00Z",
            "data": {"name": "Ana Müller", "order": f"A-{100000 + i}", "carrier": "DHL Express",
                     "tracking_url": f"https://tracking.example.com/de/track?id=JD0146000033{i:08d}&lang=de",
                     "eta": "Tuesday, 3 June", "items": "2 × Laufschuhe Modell „Sprint“ (Größe 39, blau)",
                     "total": "€ 129,90"}}


def test_a_full_batch_of_minimal_items_is_over_the_common_limit_and_accepted(api, recipient):
    text = json.dumps({"notifications": [minimal(i) for i in range(settings.NOTIFY_BATCH_MAX_ITEMS)]})
    assert len(text) > settings.NOTIFY_MAX_BODY_BYTES  # about 70 KB against 65,536: was a 413
    r = post_text(api, "/api/v1/notifications/batch", text)
    assert r.status_code == 202, r.content[:500]
    assert len(r.json()["notifications"]) == 500
    assert Notification.objects.filter(idempotency_key__startswith="min-").count() == 500


def test_a_full_batch_of_realistic_items_is_accepted(api, recipient):
    items = [realistic(i) for i in range(settings.NOTIFY_BATCH_MAX_ITEMS)]
    text = json.dumps({"notifications": items}, ensure_ascii=False)
    # Each item is well within its allowance, and all of them far over a single send's limit.
    assert max(len(json.dumps(item, ensure_ascii=False).encode()) for item in items) < settings.NOTIFY_BATCH_ITEM_BYTES
    assert len(text.encode()) > 3 * settings.NOTIFY_MAX_BODY_BYTES
    r = post_text(api, "/api/v1/notifications/batch", text)
    assert r.status_code == 202, r.content[:500]
    assert Notification.objects.filter(idempotency_key__startswith="order-A-").count() == 500


def test_the_batch_limit_is_the_item_cap_times_the_allowance():
    assert settings.NOTIFY_BATCH_MAX_BODY_BYTES == settings.NOTIFY_BATCH_MAX_ITEMS * settings.NOTIFY_BATCH_ITEM_BYTES
    # Django's own cap sits at the largest body any route takes (a batch, or an SES event via SNS).
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == max(settings.NOTIFY_BATCH_MAX_BODY_BYTES,
                                                       settings.NOTIFY_BULK_MAX_BODY_BYTES,
                                                       settings.NOTIFY_SNS_MAX_BODY_BYTES)


def _padded(limit: int, extra: int) -> str:
    """A batch body of exactly ``limit + extra`` bytes (one item with padding in its data)."""
    body = {"notifications": [{**minimal(0), "content": {"push": {"title": "t", "data": {"pad": ""}}}}]}
    bare = len(json.dumps(body))
    body["notifications"][0]["content"]["push"]["data"]["pad"] = "x" * (limit + extra - bare)
    text = json.dumps(body)
    assert len(text) == limit + extra
    return text


def test_a_batch_body_over_the_batch_limit_is_413_and_writes_nothing(api, recipient):
    before = db_counts()
    r = post_text(api, "/api/v1/notifications/batch", _padded(settings.NOTIFY_BATCH_MAX_BODY_BYTES, 1))
    assert r.status_code == 413, r.content[:500]
    assert r.json()["error"]["code"] == "body_too_large"
    assert str(settings.NOTIFY_BATCH_MAX_BODY_BYTES) in r.json()["error"]["message"]
    assert db_counts() == before


def test_a_single_send_keeps_the_common_limit(api, recipient):
    """The same size a batch takes is a 413 for a single send (and any other endpoint)."""
    text = json.dumps({**minimal(0), "content": {"push": {"title": "t", "data": {"pad": "x" * 70000}}}})
    assert settings.NOTIFY_MAX_BODY_BYTES < len(text) < settings.NOTIFY_BATCH_MAX_BODY_BYTES
    before = db_counts()
    for path in ("/api/v1/notifications", f"/api/v1/recipients/{USER}/devices"):
        r = post_text(api, path, text)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large"), path
        assert str(settings.NOTIFY_MAX_BODY_BYTES) in r.json()["error"]["message"]
    assert db_counts() == before


def test_one_item_over_the_cap_is_refused_by_the_cap_not_the_body_limit(api, recipient):
    text = json.dumps({"notifications": [minimal(i) for i in range(settings.NOTIFY_BATCH_MAX_ITEMS + 1)]})
    r = post_text(api, "/api/v1/notifications/batch", text)
    assert r.status_code == 400, r.content[:500]
    assert r.json()["error"]["reasons"] == {"notifications.non_field_errors": ["max_length"]}


def test_an_allowance_beyond_the_bound_stops_the_start():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test", "NOTIFY_BATCH_ITEM_BYTES": str(64 * 1024)}
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "NOTIFY_BATCH_ITEM_BYTES" in done.stderr and str(8 * 1024 * 1024) in done.stderr

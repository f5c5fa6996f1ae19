"""A quick property-based run of the OpenAPI schema, in process: schemathesis generates a few
requests per operation of ``/api/v1/schema`` and sends them through Django's WSGI handler,
authenticated with an ``admin``-scoped key, every other case's path variables naming objects
that exist (:func:`world`); no answer may be a 5xx, or have a status code, a
content type or a body the schema does not document for it.

The long run, over a thousand requests against a started API, is ``make fuzz``
(bench/schema_fuzz.py); what it found has its own regression tests (tests/test_schema_examples.py,
tests/test_analytics.py).
"""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.utils import timezone
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from devtools import demo
from notify import accept, scopes
from notify.models import AppAPIKey, Category, Delivery, Device, Recipient

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


#: Loaded at collection (one test per operation); the schema view reads no database.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema?format=json", get_wsgi_application())


@pytest.fixture
def world(_fresh_cache, _queues_declared) -> dict:
    """An app with an admin-scoped key, a recipient with a phone, an email and an iPhone, the
    category ``orders``, the demo template and a notification with a delivery marked sent: the
    ``known`` values half of the generated path variables are replaced with."""
    app, _ = demo.create_app("schema-fuzz")
    row, key = AppAPIKey.objects.create_key(name="fuzz", app=app, scopes=[scopes.ADMIN])
    Category.objects.create(app=app, name="orders")
    recipient = Recipient.objects.create(app=app, external_id="u-1", phone="+4915123456789", email="u@example.com")
    device = Device.objects.create(app=app, recipient=recipient, platform="ios", token="ab" * 32)
    sent = accept.submit(app.id, row.id, {"recipient": "u-1", "template": "order-shipped",
                                          "data": {"name": "A", "order": "1"}}, None).body
    Delivery.objects.filter(id=sent["deliveries"][0]["id"]).update(status="sent", sent_at=timezone.now())
    return {"key": key, "known": {
        "external_id": ["u-1"], "name": ["order-shipped", "orders"], "number": [1], "device_id": [device.id],
        "notification_id": [sent["id"]], "delivery_id": [d["id"] for d in sent["deliveries"]]}}


#: Every other case of an operation names the world's objects in its path variables.
_turn = itertools.count()


@schema.parametrize()
@settings(max_examples=4, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_each_operation_answers_as_the_schema_says(case, world):
    turn = next(_turn)
    for name, values in world["known"].items():
        if turn % 2 == 0 and name in (case.path_parameters or {}):
            case.path_parameters[name] = values[turn // 2 % len(values)]
    case.call_and_validate(headers={"Authorization": f"Api-Key {world['key']}"}, checks=CHECKS)

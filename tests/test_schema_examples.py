"""The OpenAPI schema's examples (notify.api.docs): every /api/v1 operation that takes a JSON
body shows at least one request example, every 2xx JSON answer at least one response example,
each valid against its own schema; and the request examples are bodies the API accepts, whose
answers show no field the response examples leave out.

An operation added without examples fails here by name: give it examples in its view
(``extend_schema(examples=...)``) or in notify.api.docs (``request_examples``,
``response_examples``).
"""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from channels import registry as channel_registry
from notify.models import App, AppAPIKey

API = "/api/v1"
#: The schema document itself: its answer is the schema, not something to give an example of.
SCHEMA_PATH = f"{API}/schema"
METHODS = ("get", "put", "post", "delete", "patch")
BASE = "urn:notify"


def load_schema(client) -> dict:
    response = client.get(SCHEMA_PATH, {"format": "json"})
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def to_json_schema(node, hidden: str):
    """An OpenAPI 3.0 schema as JSON Schema 2020-12: ``nullable`` also allows null, references
    point into the ``urn:notify`` resource, and the properties of the other direction
    (``hidden``: ``readOnly`` in a request, ``writeOnly`` in an answer) are neither required nor
    allowed. In an answer, read-only fields stay required."""
    if isinstance(node, list):
        return [to_json_schema(item, hidden) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    nullable = node.pop("nullable", False)
    if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        node["$ref"] = BASE + node["$ref"]
    properties = node.get("properties")
    if isinstance(properties, dict):
        gone = {name for name, sub in properties.items() if isinstance(sub, dict) and sub.get(hidden)}
        node["properties"] = {name: False if name in gone else to_json_schema(sub, hidden)
                              for name, sub in properties.items()}
        if "required" in node:
            node["required"] = [name for name in node["required"] if name not in gone]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = to_json_schema(node[key], hidden)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            node[key] = to_json_schema(node[key], hidden)
    return {"anyOf": [node, {"type": "null"}]} if nullable else node


class Checker:
    """Validates values against the schema's own schemas (formats such as uuid and date-time
    checked too), for requests or for answers."""

    def __init__(self, schema: dict, hidden: str):
        components = {name: to_json_schema(sub, hidden)
                      for name, sub in schema.get("components", {}).get("schemas", {}).items()}
        self.registry = Registry().with_resource(BASE, Resource.opaque({"components": {"schemas": components}}))
        self.hidden = hidden

    def errors(self, media_schema: dict, value) -> list[str]:
        validator = Draft202012Validator(to_json_schema(media_schema, self.hidden), registry=self.registry,
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        return [f"{'.'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
                for error in validator.iter_errors(value)]


def operations(schema: dict):
    """(path, method, operation) of every /api/v1 operation."""
    for path, item in schema["paths"].items():
        if path.startswith(API):
            for method in METHODS:
                if method in item:
                    yield path, method, item[method]


def examples_of(media: dict) -> dict:
    """The media type's examples by name (a lone ``example`` as ``"example"``)."""
    found = {name: example["value"] for name, example in media.get("examples", {}).items()}
    if "example" in media:
        found["example"] = media["example"]
    return found


@pytest.fixture
def schema(api) -> dict:
    return load_schema(api)


def test_every_json_request_body_has_examples_its_schema_accepts(schema):
    checker = Checker(schema, hidden="readOnly")
    missing, invalid, checked = [], [], {}
    for path, method, operation in operations(schema):
        media = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if media is None:
            continue
        examples = examples_of(media)
        if not examples:
            missing.append(f"{method.upper()} {path}")
        for name, value in examples.items():
            invalid += [f"{method.upper()} {path} example {name!r}: {e}"
                        for e in checker.errors(media["schema"], value)]
        checked[(path, method)] = examples
    assert not missing, f"JSON request bodies without an example: {', '.join(missing)}"
    assert not invalid, "\n".join(invalid)
    # The operations the issue named, and not vacuously: one device example per platform.
    assert {(f"{API}/categories/{{name}}", "put"), (f"{API}/notifications", "post"),
            (f"{API}/recipients/{{external_id}}/devices", "post"),
            (f"{API}/templates/{{name}}", "patch")} <= set(checked)
    devices = checked[(f"{API}/recipients/{{external_id}}/devices", "post")]
    platforms = {value["platform"]: value for value in devices.values()}
    assert set(platforms) == set(channel_registry.device_platforms()) == {"ios", "android", "web"}
    assert len(platforms["ios"]["token"]) == 64 and ":APA91b" in platforms["android"]["token"]
    web = platforms["web"]["subscription"]
    assert web["endpoint"].startswith("https://") and set(web["keys"]) == {"p256dh", "auth"}


def test_every_2xx_json_answer_has_examples_its_schema_accepts(schema):
    checker = Checker(schema, hidden="writeOnly")
    missing, invalid, checked = [], [], set()
    for path, method, operation in operations(schema):
        if path == SCHEMA_PATH:
            continue
        for status, response in operation["responses"].items():
            media = response.get("content", {}).get("application/json")
            if not status.startswith("2") or media is None:
                continue
            examples = examples_of(media)
            if not examples:
                missing.append(f"{method.upper()} {path} {status}")
            for name, value in examples.items():
                invalid += [f"{method.upper()} {path} {status} example {name!r}: {e}"
                            for e in checker.errors(media["schema"], value)]
            checked.add((path, method, status))
    assert not missing, f"2xx JSON answers without an example: {', '.join(missing)}"
    assert not invalid, "\n".join(invalid)
    assert {(f"{API}/notifications", "post", "202"), (f"{API}/notifications/batch", "post", "202"),
            (f"{API}/notifications/{{notification_id}}", "get", "200"),
            (f"{API}/notifications/{{notification_id}}", "delete", "200"),
            (f"{API}/recipients/{{external_id}}/devices", "post", "201"),
            (f"{API}/templates/{{name}}/preview", "post", "200")} <= checked
    # The notification's example shows what a delivery's reports and a scheduled one look like.
    shown = examples_of(schema["paths"][f"{API}/notifications/{{notification_id}}"]["get"]["responses"]["200"]
                        ["content"]["application/json"])
    deliveries = [d for example in shown.values() for d in example["deliveries"]]
    assert any(d["events"] for d in deliveries) and any(d["scheduled_for"] for d in deliveries)


def test_schema_validation_catches_a_wrong_example(schema):
    """The checks above are not vacuous: a wrong type, a missing required field, a read-only
    field in a request, a null where none is allowed and a malformed date-time are refused."""
    requests, answers = Checker(schema, hidden="readOnly"), Checker(schema, hidden="writeOnly")
    device = {"$ref": "#/components/schemas/Device"}
    assert requests.errors(device, {"platform": "ios", "token": "ab" * 32}) == []
    assert requests.errors(device, {"platform": "ios", "token": "ab" * 32, "id": 3})  # read-only
    assert requests.errors(device, {"token": "ab" * 32})  # platform required
    assert answers.errors(device, {"platform": "ios", "token": "ab" * 32})  # id, active, created_at required
    delivery = {"$ref": "#/components/schemas/DeliveryOut"}
    shown = examples_of(schema["paths"][f"{API}/notifications/{{notification_id}}"]["get"]["responses"]["200"]
                        ["content"]["application/json"])
    row = next(iter(shown.values()))["deliveries"][0]
    assert answers.errors(delivery, row) == []
    assert answers.errors(delivery, {**row, "attempts": "1"})
    assert answers.errors(delivery, {**row, "updated_at": None})
    assert answers.errors(delivery, {**row, "updated_at": "2 March 2026"})


# --- the examples against the API --------------------------------------------------------------

@pytest.fixture
def fresh_api(db, _fresh_cache, _queues_declared):
    """A client of a new app without templates, so the examples' names are free."""
    from rest_framework.test import APIClient

    app = App.objects.create(name="schema-examples")
    _, key = AppAPIKey.objects.create_key(name="schema-examples key", app=app)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


class Session:
    """Calls the API as the schema documents it: each answer's status must be documented, the
    body valid against its schema, and every field it has shown by one of its examples."""

    def __init__(self, client, schema: dict):
        self.client, self.schema = client, schema
        self.answers = Checker(schema, hidden="writeOnly")
        self.problems: list[str] = []

    def request_examples(self, path: str, method: str) -> dict:
        media = self.schema["paths"][path][method]["requestBody"]["content"]["application/json"]
        return examples_of(media)

    def call(self, method: str, path: str, values: dict | None = None, body=None, expect: int | None = None):
        url = path.format(**(values or {}))
        response = getattr(self.client, method)(url, body, format="json") if body is not None \
            else getattr(self.client, method)(url)
        where = f"{method.upper()} {url} ({response.status_code})"
        answer = response.json() if response.content else None
        if expect is not None and response.status_code != expect or not 200 <= response.status_code < 300:
            self.problems.append(f"{where}: expected {expect or '2xx'}: {answer}")
            return answer
        documented = self.schema["paths"][path][method]["responses"].get(str(response.status_code))
        if documented is None:
            self.problems.append(f"{where}: status not documented")
            return answer
        media = documented.get("content", {}).get("application/json")
        if media is None:
            if answer is not None:
                self.problems.append(f"{where}: a body where the schema documents none")
            return answer
        self.problems += [f"{where}: {error}" for error in self.answers.errors(media["schema"], answer)]
        shown = set()
        for example in examples_of(media).values():
            for item in example if isinstance(example, list) else [example]:
                shown |= set(item)
        for item in answer if isinstance(answer, list) else [answer]:
            if set(item) - shown:
                self.problems.append(f"{where}: fields no example shows: {sorted(set(item) - shown)}")
        return answer

    def send_examples(self, method: str, path: str, values: dict | None = None, only=None, expect=None) -> dict:
        """Each request example of the operation (or those named in ``only``), in order."""
        answers = {}
        for name, body in self.request_examples(path, method).items():
            if only is None or name in only:
                answers[name] = self.call(method, path, values, body, expect)
        return answers


def test_the_request_examples_are_bodies_the_api_accepts(fresh_api):
    """Every request example sent as it is, in a product team's order (categories, recipients
    and devices, a template and its versions, sends, preferences), and the GETs after them."""
    session = Session(fresh_api, load_schema(fresh_api))
    category = f"{API}/categories/{{name}}"
    session.send_examples("put", category, {"name": "orders"}, only={"create"}, expect=201)
    session.send_examples("put", category, {"name": "security"}, only={"required"}, expect=201)
    session.send_examples("put", category, {"name": "orders"}, only={"change"}, expect=200)
    for user in ("user-42", "user-43"):
        session.send_examples("put", f"{API}/recipients/{{external_id}}", {"external_id": user}, only={"recipient"},
                              expect=201)
    devices = f"{API}/recipients/{{external_id}}/devices"
    session.send_examples("post", devices, {"external_id": "user-42"}, expect=201)
    first = next(iter(session.request_examples(devices, "post").values()))
    session.call("post", devices, {"external_id": "user-42"}, first, expect=200)  # known: re-activated

    templates = f"{API}/templates"
    session.send_examples("post", templates, expect=201)
    session.send_examples("patch", f"{templates}/{{name}}", {"name": "order-shipped"}, expect=200)
    session.send_examples("post", f"{templates}/{{name}}/versions", {"name": "order-shipped"}, expect=201)
    session.send_examples("post", f"{templates}/{{name}}/preview", {"name": "order-shipped"}, expect=200)
    session.call("post", f"{templates}/{{name}}/versions/{{number}}/publish", {"name": "order-shipped", "number": 2},
                 expect=200)

    sent = session.send_examples("post", f"{API}/notifications", expect=202)
    session.send_examples("post", f"{API}/notifications/batch", expect=202)
    session.send_examples("put", f"{API}/recipients/{{external_id}}/preferences", {"external_id": "user-42"},
                          expect=200)
    session.send_examples("put", f"{API}/recipients/{{external_id}}", {"external_id": "user-43"}, only={"pause"},
                          expect=200)

    notification = f"{API}/notifications/{{notification_id}}"
    ids = {"notification_id": sent["template"]["id"]} if isinstance(sent.get("template"), dict) else None
    assert ids, sent
    for method, path, values in [
            ("get", f"{API}/categories", None), ("get", category, {"name": "orders"}),
            ("get", f"{API}/recipients/{{external_id}}", {"external_id": "user-43"}),
            ("get", devices, {"external_id": "user-42"}),
            ("get", f"{API}/recipients/{{external_id}}/preferences", {"external_id": "user-42"}),
            ("get", f"{API}/recipients/{{external_id}}/preference-link", {"external_id": "user-42"}),
            ("get", templates, None), ("get", f"{templates}/{{name}}", {"name": "order-shipped"}),
            ("get", f"{templates}/{{name}}/versions", {"name": "order-shipped"}),
            ("get", f"{templates}/{{name}}/versions/{{number}}", {"name": "order-shipped", "number": 3}),
            ("get", notification, ids), ("delete", notification, ids)]:
        session.call(method, path, values)
    assert not session.problems, "\n".join(session.problems)


# --- what the property-based run of the schema found (make fuzz: bench/schema_fuzz.py) ----------

def test_answers_the_schema_fuzz_found_wrong_now_conform(fresh_api):
    """A notification sent without an idempotency key (``event_id`` null: the schema said a
    string), read and cancelled; the API root, whose links with a path variable are URI
    templates (the schema said ``format: uri``, which no ``{`` may be in)."""
    session = Session(fresh_api, load_schema(fresh_api))
    session.call("put", f"{API}/recipients/{{external_id}}", {"external_id": "u-1"}, {"email": "u1@example.com"},
                 expect=201)
    sent = session.call("post", f"{API}/notifications", None, {
        "recipient": "u-1", "content": {"email": {"subject": "s", "text": "t"}}}, expect=202)
    assert sent["event_id"] is None
    notification = f"{API}/notifications/{{notification_id}}"
    assert session.call("get", notification, {"notification_id": sent["id"]})["event_id"] is None
    session.call("delete", notification, {"notification_id": sent["id"]})
    root = session.call("get", f"{API}/")
    assert root["links"]["recipient"]["href"].endswith("/api/v1/recipients/{external_id}")
    assert not session.problems, "\n".join(session.problems)


def test_every_lookup_by_a_path_variable_documents_its_404_and_a_recipients_path_its_400(fresh_api):
    """Each operation with a path variable documents the 404 of an object not in the caller's
    app (or a variable of the wrong shape), with the error body; those under
    ``/recipients/{external_id}`` the 400 of an id no recipient can have. Both as answered."""
    schema = load_schema(fresh_api)
    answers = Checker(schema, hidden="writeOnly")
    undocumented = [f"{method.upper()} {path} {status}" for path, method, operation in operations(schema)
                    for status in (["404"] if "{" in path else []) + (["400"] if "{external_id}" in path else [])
                    if status not in operation["responses"]]
    assert not undocumented, undocumented
    for method, url, status in [("get", f"{API}/recipients/nobody/preferences", 404),
                                ("delete", f"{API}/recipients/nobody/devices/1", 404),
                                ("get", f"{API}/notifications/not-a-uuid", 404),
                                ("post", f"{API}/deliveries/0d6c5c5e-4f0e-4d3b-9a51-2f3c9f1b7a10/opened", 404),
                                ("get", f"{API}/recipients/a%00b/preference-link", 400)]:
        response = getattr(fresh_api, method)(url)
        assert response.status_code == status, (url, response.content)
        assert answers.errors({"$ref": "#/components/schemas/ApiError"}, response.json()) == [], url


def test_operations_are_grouped_by_resource_and_keep_their_ids(schema):
    tags: dict[str, set] = {}
    for path, _, operation in operations(schema):
        tags.setdefault(path, set()).update(operation["tags"])
    assert tags[f"{API}/notifications"] == {"notifications"}
    assert tags[f"{API}/recipients/{{external_id}}/devices"] == {"recipients"}
    assert tags[f"{API}/templates/{{name}}/preview"] == {"templates"}
    # One section per resource, none holding nearly all (they were all under "api").
    assert "api" not in set().union(*tags.values())
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert "api_v1_notifications_create" in ids and all(i.startswith("api_v1_") for i in ids)

"""sandbox.json against its JSON Schema (sandbox/sandbox.schema.json, draft 2020-12).

The schema closes every object (``additionalProperties: false``), so a key the sandbox starts
writing without documenting it fails here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from sandbox.credentials import ensure_credentials, sandbox_json
from sandbox.ports import Ports

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "sandbox" / "sandbox.schema.json"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _errors(validator: Draft202012Validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def _objects(schema: dict, path: str = "#"):
    """Every object-typed subschema of ``schema`` with its location."""
    if schema.get("type") == "object":
        yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _objects(sub, f"{path}/properties/{key}")


def test_schema_closes_every_object_and_requires_every_key(validator):
    objects = list(_objects(validator.schema))
    assert len(objects) == 8  # the document and apns, fcm, webpush, twilio, ses, smtp, sns
    for where, obj in objects:
        assert obj.get("additionalProperties") is False, where
        assert set(obj["required"]) == set(obj["properties"]), where
        for key, sub in obj["properties"].items():
            described = sub.get("description") or ""
            assert described.strip(), f"{where}/{key} has no description"


def test_written_sandbox_json_matches_schema(sandbox, validator):
    doc = json.loads((sandbox.dir / "sandbox.json").read_text())
    assert _errors(validator, doc) == []
    assert doc == sandbox.config


def test_control_config_matches_schema(ctl, validator):
    assert _errors(validator, ctl.config()) == []


@pytest.mark.parametrize("public_host", ["127.0.0.1", "localhost", "sandbox", "::1",
                                         "2001:db8::5"])
def test_every_public_host_form_matches_schema(tmp_path, validator, public_host):
    creds = ensure_credentials(tmp_path, Ports(19480, public_host))
    assert _errors(validator, sandbox_json(creds)) == []


@pytest.mark.parametrize("where", [(), ("apns",), ("fcm",), ("webpush",), ("twilio",), ("ses",),
                                   ("smtp",), ("sns",)])
def test_undocumented_key_is_rejected(sandbox, validator, where):
    doc = copy.deepcopy(sandbox.config)
    target = doc
    for key in where:
        target = target[key]
    target["surprise"] = "x"
    errors = _errors(validator, doc)
    assert len(errors) == 1 and "surprise" in errors[0], errors


def test_missing_or_mistyped_key_is_rejected(sandbox, validator):
    doc = copy.deepcopy(sandbox.config)
    del doc["twilio"]["auth_token"]
    doc["smtp"]["port"] = str(doc["smtp"]["port"])
    errors = _errors(validator, doc)
    assert len(errors) == 2, errors

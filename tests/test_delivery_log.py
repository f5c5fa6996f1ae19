"""The outcome write keeps any provider answer: a long one is cut, yet still valid JSON for the
delivery log's jsonb column (a cut JSON text would make the cast, and so the outcome, fail)."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from channels.base import Outcome, Result
from notify.store import ANSWER_LIMIT, answer_json


@pytest.mark.django_db
@pytest.mark.parametrize("size", [10, ANSWER_LIMIT * 3])
def test_provider_answer_of_any_length_is_stored_as_valid_json(size):
    result = Result(Outcome.FAILED, status=400, raw={"body": "é" * size, "status": 400})
    text = answer_json(result.raw)
    assert len(text) <= ANSWER_LIMIT
    stored = json.loads(text)
    assert stored == result.raw if size < ANSWER_LIMIT else stored["truncated"].startswith('{"body": "')
    with connection.cursor() as cursor:  # what the outcome statement does with it
        cursor.execute("SELECT %s::jsonb", [text])
        assert cursor.fetchone()[0] is not None

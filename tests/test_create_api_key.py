"""``manage.py create_api_key``: a key a new user can call the API with at once, with the scopes
asked for; and the admin shows only the app keys (the library's own key model is hidden)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from notify.models import App, AppAPIKey

pytestmark = pytest.mark.django_db


def create(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def client(key: str) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return c


def test_the_printed_key_works_with_the_default_scopes_and_the_app_is_created():
    key, told = create("shop")
    assert "created app 'shop'" in told
    assert client(key).put("/api/v1/recipients/u1", {"email": "u1@example.com"}, format="json").status_code == 201
    row = AppAPIKey.objects.get(app__name="shop")
    assert sorted(row.scopes) == ["analytics", "recipients", "send", "templates"]


def test_scopes_and_expiry_are_as_asked_and_an_existing_app_is_reused():
    App.objects.create(name="shop")
    key, told = create("shop", "--scope", "send", "--expires", "30")
    assert "created app" not in told and "expires" in told
    answer = client(key).get("/api/v1/analytics")
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "missing_scope"
    assert AppAPIKey.objects.get(app__name="shop").expiry_date is not None


def test_a_bad_expiry_or_scope_is_refused_and_makes_no_key():
    with pytest.raises(CommandError):
        create("shop", "--expires", "0")
    with pytest.raises(CommandError):
        create("shop", "--scope", "everything")
    assert not AppAPIKey.objects.exists()


def test_the_admin_lists_app_keys_only(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "/admin/notify/appapikey/" in page
    assert "/admin/rest_framework_api_key/" not in page

"""Categories, preferences, the pause and the preference link through the API and the admin,
in-process against the real PostgreSQL and Redis: every rule refused with 400 naming the field
and nothing written, a required category that cannot be left, and every change clearing the
cached profile so the very next send sees it."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.utils import timezone

from notify import cache, preferences
from notify.models import Category, Preference, Recipient

pytestmark = pytest.mark.django_db(transaction=True)

MARKETING = {"label": "News and offers", "description": "Sales, new products", "defaults": {"sms": False},
             "rate_limits": {"push": "3/hour;10/day", "*": "20/day"}, "over_limit": "defer",
             "quiet_hours": "22:00-08:00"}


@pytest.fixture
def recipient(api):
    r = api.put("/api/v1/recipients/ana", {"locale": "de-DE", "email": "ana@example.com", "phone": "+4915123456789"},
                format="json")
    assert r.status_code == 201, r.content
    return Recipient.objects.get(external_id="ana")


@pytest.fixture
def admin_client(client, app_key):
    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.login(username="ops", password="pw-for-tests-only")
    return client


def send(api, category: str, channels=("email",)) -> dict:
    r = api.post("/api/v1/notifications", {"recipient": "ana", "category": category, "channels": list(channels),
                                           "content": {"email": {"subject": "s", "text": "t"},
                                                       "sms": {"body": "b"}}}, format="json")
    assert r.status_code == 202, r.content
    return {d["channel"]: (d["status"], d["reason"]) for d in r.json()["deliveries"]}


# --- categories --------------------------------------------------------------------------------

def test_put_creates_then_updates_a_category_and_get_lists_it(api, app_key):
    r = api.put("/api/v1/categories/marketing", MARKETING, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert {k: body[k] for k in MARKETING} == MARKETING and body["name"] == "marketing" and body["required"] is False
    r = api.put("/api/v1/categories/marketing", {"required": True, "quiet_hours": "none"}, format="json")
    assert r.status_code == 200 and r.json()["required"] is True and r.json()["label"] == "News and offers"
    assert api.put("/api/v1/categories/security", {"required": True}, format="json").status_code == 201
    names = [c["name"] for c in api.get("/api/v1/categories").json()]
    assert names == ["marketing", "security"]
    row = Category.objects.get(app=app_key[0], name="marketing")
    assert (row.required, row.quiet_hours, row.defaults) == (True, "none", {"sms": False})
    assert api.get("/api/v1/categories/marketing").json()["quiet_hours"] == "none"


def test_categories_are_scoped_to_the_app(api, app_key):
    from devtools import demo
    from rest_framework.test import APIClient

    api.put("/api/v1/categories/marketing", {}, format="json")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {demo.create_app('other')[1]}")
    assert other.get("/api/v1/categories").json() == []
    r = other.get("/api/v1/categories/marketing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "category_not_found"
    assert other.delete("/api/v1/categories/marketing").status_code == 404
    assert Category.objects.filter(name="marketing").count() == 1


def test_an_unknown_rate_limit_key_lists_each_choice_once(api):
    r = api.put("/api/v1/categories/marketing", {"rate_limits": {"everything": "3/hour"}}, format="json")
    assert r.status_code == 400, r.content
    [message] = r.json()["error"]["fields"]["rate_limits.everything"]
    choices = message.rpartition("one of ")[2].split(", ")
    assert choices == ["apns", "fcm", "webpush", "sms", "email", "push", "*"], message


@pytest.mark.parametrize("body, field", [
    ({"defaults": {"pager": True}}, "defaults.pager"),
    ({"defaults": {"sms": "no"}}, "defaults.sms"),
    ({"defaults": ["sms"]}, "defaults"),
    ({"rate_limits": {"sms": "often"}}, "rate_limits.sms"),
    ({"rate_limits": {"sms": "0/hour"}}, "rate_limits.sms"),
    ({"rate_limits": {"everything": "3/hour"}}, "rate_limits.everything"),
    ({"rate_limits": {"push": 3}}, "rate_limits.push"),
    ({"over_limit": "drop"}, "over_limit"),
    ({"quiet_hours": "22-8"}, "quiet_hours"),
    ({"quiet_hours": "25:00-08:00"}, "quiet_hours"),
    ({"required": "maybe"}, "required"),
    ({"label": "x" * 101}, "label"),
    ({"name": "other"}, "name"),
    ({"colour": "red"}, "colour"),
])
def test_bad_category_fields_are_400_naming_the_field_and_nothing_is_written(api, body, field):
    r = api.put("/api/v1/categories/marketing", body, format="json")
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and field in error["fields"], error
    key = field.partition(".")[2]
    assert not key or not error["fields"][field][0].startswith(f"{key}:"), error  # the path names the key once
    assert not Category.objects.exists()


def test_a_bad_category_name_in_the_url_is_400(api):
    r = api.put("/api/v1/categories/no%20spaces", {}, format="json")
    assert r.status_code == 400 and "name" in r.json()["error"]["fields"]


def test_delete_removes_the_category_and_its_rules_stop_applying(api, recipient):
    api.put("/api/v1/categories/marketing", {"defaults": {"email": False}}, format="json")
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}
    assert api.delete("/api/v1/categories/marketing").status_code == 204
    assert send(api, "marketing") == {"email": ("queued", None)}
    assert api.get("/api/v1/categories/marketing").status_code == 404


def test_category_default_applies_to_the_next_send_through_the_cache(api, recipient):
    assert send(api, "marketing", ("email", "sms")) == {"email": ("queued", None), "sms": ("queued", None)}
    api.put("/api/v1/categories/marketing", {"defaults": {"sms": False}}, format="json")
    assert send(api, "marketing", ("email", "sms")) == {"email": ("queued", None), "sms": ("suppressed", "opted_out")}


# --- preferences -------------------------------------------------------------------------------

def test_a_required_category_cannot_be_opted_out_and_nothing_is_written(api, recipient):
    api.put("/api/v1/categories/security", {"required": True}, format="json")
    r = api.put("/api/v1/recipients/ana/preferences", {"preferences": [
        {"channel": "sms", "category": "marketing", "enabled": False},
        {"channel": "email", "category": "security", "enabled": False}]}, format="json")
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "category_required" and "security" in error["message"]
    assert list(error["fields"]) == ["preferences.1.category"]
    assert not Preference.objects.exists()
    # Opting in is harmless, and a channel-wide opt-out leaves the required category going out.
    r = api.put("/api/v1/recipients/ana/preferences", {"preferences": [
        {"channel": "email", "category": "security", "enabled": True},
        {"channel": "email", "category": "", "enabled": False}]}, format="json")
    assert r.status_code == 200, r.content
    assert send(api, "security") == {"email": ("queued", None)}
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}


def test_an_opt_out_through_the_api_clears_the_cached_profile(api, recipient):
    assert send(api, "marketing") == {"email": ("queued", None)}  # caches the profile
    assert cache.load_profile(recipient.app_id, "ana")["preferences"] == {}
    api.put("/api/v1/recipients/ana/preferences",
            {"preferences": [{"channel": "email", "category": "marketing", "enabled": False}]}, format="json")
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}
    assert send(api, "orders") == {"email": ("queued", None)}
    row = Preference.objects.get(recipient=recipient)
    assert (row.channel, row.category, row.enabled, row.source) == ("email", "marketing", False, "api")


# --- the pause (global mute) -------------------------------------------------------------------

def test_mute_with_an_end_time_pauses_every_category_but_the_required_ones(api, recipient):
    api.put("/api/v1/categories/security", {"required": True}, format="json")
    assert send(api, "marketing") == {"email": ("queued", None)}
    until = (timezone.now() + dt.timedelta(hours=2)).astimezone(dt.timezone(dt.timedelta(hours=9)))
    r = api.put("/api/v1/recipients/ana", {"muted_until": until.isoformat()}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["muted"] is True
    assert dt.datetime.fromisoformat(r.json()["muted_until"]) == until.replace(microsecond=until.microsecond)
    assert send(api, "marketing") == {"email": ("suppressed", "muted")}
    assert send(api, "security") == {"email": ("queued", None)}
    r = api.put("/api/v1/recipients/ana", {"muted": False}, format="json")
    assert r.json()["muted"] is False and r.json()["muted_until"] is None
    assert send(api, "marketing") == {"email": ("queued", None)}
    api.put("/api/v1/recipients/ana", {"muted": True}, format="json")
    assert send(api, "marketing") == {"email": ("suppressed", "muted")}
    assert api.get("/api/v1/recipients/ana").json()["muted"] is True


@pytest.mark.parametrize("body, field", [
    ({"muted_until": "2030-01-01T09:00:00"}, "muted_until"),  # no offset
    ({"muted_until": "2020-01-01T09:00:00Z"}, "muted_until"),  # past
    ({"muted_until": "tomorrow"}, "muted_until"),
    ({"muted": False, "muted_until": "2030-01-01T09:00:00Z"}, "muted_until"),
    ({"muted": "sometimes"}, "muted"),
])
def test_bad_mute_fields_are_400_and_nothing_changes(api, recipient, body, field):
    r = api.put("/api/v1/recipients/ana", body, format="json")
    assert r.status_code == 400 and field in r.json()["error"]["fields"], r.content
    recipient.refresh_from_db()
    assert (recipient.muted, recipient.muted_until) == (False, None)


# --- the preference link -----------------------------------------------------------------------

def test_preference_link_is_a_signed_url_of_the_public_host_that_expires(api, recipient, settings):
    before = timezone.now()
    r = api.get("/api/v1/recipients/ana/preference-link")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["url"].startswith(f"{settings.NOTIFY_PUBLIC_URL}/preferences/")
    expires = dt.datetime.fromisoformat(body["expires_at"])
    assert abs((expires - before).total_seconds() - settings.NOTIFY_PREFERENCE_LINK_MAX_AGE) < 60
    token = body["url"].rsplit("/", 1)[1]
    assert signing.loads(token, salt="notify.preferences") == {"a": recipient.app_id, "r": recipient.id}
    assert api.get("/api/v1/recipients/nobody/preference-link").status_code == 404


# --- the admin ---------------------------------------------------------------------------------

def _category_post(**fields) -> dict:
    return {"app": fields.pop("app"), "name": "marketing", "label": "", "description": "", "over_limit": "suppress",
            "quiet_hours": "", "defaults": "{}", "rate_limits": "{}", **fields}


def test_admin_category_form_checks_the_json_fields_like_the_api(admin_client, app_key):
    app = app_key[0]
    response = admin_client.post("/admin/notify/category/add/", _category_post(
        app=app.id, defaults='{"pager": true, "sms": "no"}', rate_limits='{"sms": "often"}', quiet_hours="8-22"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"defaults", "rate_limits", "quiet_hours"}
    assert any(message.startswith("pager: not a channel") for message in errors["defaults"])
    assert any(message.startswith("sms: must be true or false") for message in errors["defaults"])
    assert errors["rate_limits"][0].startswith("sms: 'often' is not a rate limit")  # the key named once
    assert not Category.objects.exists()
    response = admin_client.post("/admin/notify/category/add/", _category_post(
        app=app.id, required="on", defaults='{"sms": false}', rate_limits='{"*": "5/day"}', quiet_hours="22:00-07:00"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    row = Category.objects.get(app=app, name="marketing")
    assert (row.required, row.defaults, row.rate_limits, row.quiet_hours) == (True, {"sms": False}, {"*": "5/day"},
                                                                              "22:00-07:00")
    assert admin_client.get("/admin/notify/category/").status_code == 200


def change_form_data(response) -> dict:
    """The POST an admin change page would send as it is shown: the main form's and each
    inline's current values with their management forms."""
    data = {}

    def add(form):
        for name, field in form.fields.items():
            value = form[name].value()
            if value is None or value is False:
                continue
            key = form.add_prefix(name)
            if value is True:
                data[key] = "on"
            elif isinstance(value, (list, tuple)):
                data[key] = value
            else:
                data[key] = field.widget.format_value(value) if hasattr(field.widget, "format_value") and \
                    not isinstance(value, str) else value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[formset.management_form.add_prefix(name)] = value
        for form in formset.forms:
            add(form)
    return data


def test_admin_preference_inline_and_mute_clear_the_cached_profile(admin_client, api, recipient):
    api.put("/api/v1/categories/security", {"required": True}, format="json")
    api.put("/api/v1/recipients/ana/preferences",
            {"preferences": [{"channel": "email", "category": "marketing", "enabled": True}]}, format="json")
    assert send(api, "marketing") == {"email": ("queued", None)}
    assert cache.load_profile(recipient.app_id, "ana")["preferences"] == {"email|marketing": True}

    url = f"/admin/notify/recipient/{recipient.id}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    for field in ("muted", "muted_until_0", "quiet_hours"):
        assert f'name="{field}"' in html
    data = change_form_data(page)
    prefix = next(k for k in data if re.fullmatch(r"preferences-\d+-id", k)).rsplit("-", 1)[0]
    data.pop(f"{prefix}-enabled")  # untick: opted out
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    row = Preference.objects.get(recipient=recipient, category="marketing")
    assert (row.enabled, row.source) == (False, "admin")
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}

    # A required category cannot be switched off in the admin either.
    data = change_form_data(admin_client.get(url))
    data.update({"preferences-TOTAL_FORMS": "2", "preferences-1-channel": "email", "preferences-1-category": "security",
                 "preferences-1-recipient": str(recipient.id)})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "required category" in response.content.decode()
    assert not Preference.objects.filter(category="security").exists()

    # The pause, and quiet hours checked like the API's.
    data = change_form_data(admin_client.get(url))
    data["quiet_hours"] = "late"
    assert admin_client.post(url, data).status_code == 200
    data.update({"quiet_hours": "22:00-07:00", "muted": "on"})
    response = admin_client.post(url, data)
    assert response.status_code == 302
    assert send(api, "orders") == {"email": ("suppressed", "muted")}
    assert send(api, "security") == {"email": ("queued", None)}
    recipient.refresh_from_db()
    assert (recipient.muted, recipient.quiet_hours) == (True, "22:00-07:00")


def test_admin_preference_page_edit_clears_the_cached_profile(admin_client, api, recipient):
    assert send(api, "marketing") == {"email": ("queued", None)}
    response = admin_client.post("/admin/notify/preference/add/", {
        "recipient": recipient.id, "channel": "email", "category": "marketing", "enabled": ""})
    assert response.status_code == 302
    assert Preference.objects.get(recipient=recipient).source == "admin"
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}
    response = admin_client.post("/admin/notify/preference/add/", {
        "recipient": recipient.id, "channel": "pager", "category": "", "enabled": ""})
    assert response.status_code == 200 and "channel" in response.context["adminform"].form.errors


def test_preference_link_language_follows_the_locale_by_its_language():
    assert preferences.language("ko-KR") == "ko"
    assert preferences.language("ja") == "ja"
    assert preferences.language("pt-BR") == "en"
    assert preferences.language("") == "en"
    assert set(preferences.LANGUAGES) >= {"en", "ko", "de", "fr", "es", "ja"}

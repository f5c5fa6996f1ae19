"""The Django admin: every page of the notify models renders, templates and opt-outs are
editable there and take effect on the next send, and dead letters can be replayed."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from notify.models import Delivery, DeliveryLog, Notification, Recipient, Template, TemplateVersion

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(client, app_key):
    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.login(username="ops", password="pw-for-tests-only")
    return client


@pytest.fixture
def sent(api):
    api.put("/api/v1/recipients/adm", {"email": "adm@example.com", "phone": "+821099998888"}, format="json")
    body = api.post("/api/v1/notifications", {"recipient": "adm", "template": "order-shipped",
                                              "data": {"name": "A", "order": "1"}}, format="json").json()
    return body


@pytest.mark.parametrize("model", ["app", "appapikey", "recipient", "preference", "template", "notification", "delivery",
                                   "broadcast"])
def test_every_changelist_renders(admin_client, sent, model):
    assert admin_client.get(f"/admin/notify/{model}/").status_code == 200


def test_notification_and_delivery_pages_are_read_only(admin_client, sent):
    page = admin_client.get(f"/admin/notify/notification/{sent['id']}/change/")
    assert page.status_code == 200 and b"Save" not in page.content
    d = sent["deliveries"][0]["id"]
    assert admin_client.get(f"/admin/notify/delivery/{d}/change/").status_code == 200
    assert admin_client.post(f"/admin/notify/delivery/{d}/delete/", {"post": "yes"}).status_code == 403


def test_opt_out_added_in_the_admin_applies_to_the_next_send(admin_client, api, sent):
    recipient = Recipient.objects.get(external_id="adm")
    response = admin_client.post("/admin/notify/preference/add/", {
        "recipient": recipient.id, "channel": "sms", "category": "", "enabled": "", "source": "admin"})
    assert response.status_code == 302, response.content[:2000]
    body = api.post("/api/v1/notifications", {"recipient": "adm", "content": {"sms": {"body": "x"}}}, format="json").json()
    assert body["deliveries"][0]["reason"] == "opted_out"


def _change_form(template, new_content=None, **overrides) -> dict:
    """The POST of a template's change page: its settings, every existing version as shown
    (published ones disabled) and, if ``new_content``, the new-version form filled in."""
    versions = list(template.versions.order_by("number"))
    data = {"app": template.app_id, "name": template.name, "category": template.category,
            "default_locale": template.default_locale,
            "versions-TOTAL_FORMS": str(len(versions) + 1), "versions-INITIAL_FORMS": str(len(versions)),
            "versions-MIN_NUM_FORMS": "0", "versions-MAX_NUM_FORMS": "1000"}
    for i, version in enumerate(versions):
        data.update({f"versions-{i}-id": version.id, f"versions-{i}-template": template.id,
                     f"versions-{i}-content": json.dumps(version.content),
                     f"versions-{i}-variants": json.dumps(version.variants)})
    new = len(versions)
    data.update({f"versions-{new}-id": "", f"versions-{new}-template": template.id,
                 f"versions-{new}-content": json.dumps(new_content if new_content is not None else versions[-1].content),
                 f"versions-{new}-variants": "[]"})
    data.update(overrides)
    return data


def test_template_edited_in_the_admin_is_used_at_once_and_versioned(admin_client, api, sent, app_key):
    template = Template.objects.get(app=app_key[0], name="order-shipped")
    v1 = template.versions.get()
    page = admin_client.get(f"/admin/notify/template/{template.id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert re.search(r'<textarea name="versions-0-content"[^>]*\sdisabled[\s>]', html)  # v1 is read-only
    assert re.search(r'<textarea name="versions-1-content"[^>]*>', html).group().count("disabled") == 0  # the new one
    content = {"ko": dict(v1.content["ko"], sms={"body": "NEW {{ order }}"})}

    # Editing the content adds version 2, a draft: sends keep using version 1 until it is published.
    response = admin_client.post(f"/admin/notify/template/{template.id}/change/", _change_form(template, content))
    assert response.status_code == 302, response.content[:3000]
    v2 = template.versions.get(number=2)
    assert v2.published_at is None and v2.content == content
    body = api.post("/api/v1/notifications", {"recipient": "adm", "template": "order-shipped", "channels": ["sms"],
                                              "data": {"name": "A", "order": "8"}}, format="json").json()
    notification = Notification.objects.get(id=body["id"])
    assert notification.template_version == 1 and "NEW" not in notification.content["sms"]["body"]

    response = admin_client.post("/admin/notify/template/", {"action": "publish_latest_draft",
                                                             "_selected_action": [template.id]})
    assert response.status_code == 302
    assert TemplateVersion.objects.get(id=v2.id).published_at is not None
    body = api.post("/api/v1/notifications", {"recipient": "adm", "template": "order-shipped", "channels": ["sms"],
                                              "data": {"order": "9"}}, format="json").json()
    notification = Notification.objects.get(id=body["id"])
    assert notification.content["sms"]["body"] == "NEW 9"
    assert notification.template_version == 2
    assert TemplateVersion.objects.get(id=v1.id).content == v1.content  # version 1 as it was
    listing = admin_client.get("/admin/notify/template/").content.decode()
    assert "v2" in listing


def test_published_versions_cannot_change_through_the_admin(admin_client, sent, app_key):
    template = Template.objects.get(app=app_key[0], name="order-shipped")
    v1 = template.versions.get()
    data = _change_form(template)  # the new-version form left as the copy it starts as
    data["versions-0-content"] = json.dumps({"ko": {"sms": {"body": "tampered"}}})
    data["versions-0-DELETE"] = "on"
    response = admin_client.post(f"/admin/notify/template/{template.id}/change/", data)
    assert response.status_code == 302, response.content[:3000]
    assert list(template.versions.values_list("number", "content")) == [(1, v1.content)]


def test_a_new_version_that_does_not_compile_is_refused_naming_the_part(admin_client, sent, app_key):
    template = Template.objects.get(app=app_key[0], name="order-shipped")
    bad = {"ko": {"sms": {"body": "Hi {{ name "}}, "xx": {"fax": {"body": "x"}}}
    response = admin_client.post(f"/admin/notify/template/{template.id}/change/", _change_form(template, bad))
    assert response.status_code == 200
    errors = response.content.decode()
    assert "content.ko.sms.body" in errors and "content.xx.fax: unknown field" in errors
    assert template.versions.count() == 1


def test_publish_button_archive_and_unarchive(admin_client, api, sent, app_key):
    template = Template.objects.get(app=app_key[0], name="order-shipped")
    v1 = template.versions.get()
    content = {"ko": dict(v1.content["ko"], sms={"body": "V2 {{ order }}"})}
    admin_client.post(f"/admin/notify/template/{template.id}/change/", _change_form(template, content))
    page = admin_client.get(f"/admin/notify/template/{template.id}/change/").content.decode()
    assert "Publish latest draft (v2)" in page and f"/admin/notify/template/{template.id}/preview/" in page
    assert admin_client.get(f"/admin/notify/template/{template.id}/publish/").status_code == 405
    response = admin_client.post(f"/admin/notify/template/{template.id}/publish/", follow=True)
    assert "v2 published" in response.content.decode()
    assert admin_client.post(f"/admin/notify/template/{template.id}/publish/", follow=True).content.decode().count(
        "no draft to publish") == 1

    send = {"recipient": "adm", "template": "order-shipped", "channels": ["sms"], "data": {"order": "3"}}
    assert api.post("/api/v1/notifications", send, format="json").status_code == 202
    admin_client.post("/admin/notify/template/", {"action": "archive", "_selected_action": [template.id]})
    assert Template.objects.get(id=template.id).archived_at is not None
    refused = api.post("/api/v1/notifications", send, format="json")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "template_not_found"
    assert "order-shipped" in admin_client.get("/admin/notify/template/?archived=yes").content.decode()
    admin_client.post("/admin/notify/template/", {"action": "unarchive", "_selected_action": [template.id]})
    assert api.post("/api/v1/notifications", send, format="json").status_code == 202


def test_template_added_in_the_admin_starts_at_version_1(admin_client, api, sent, app_key):
    add = admin_client.get("/admin/notify/template/add/")
    assert add.status_code == 200
    assert set(add.context["inline_admin_formsets"][0].formset.forms[0].initial["content"]["en"]) == {
        "push", "sms", "email"}  # a skeleton to fill in
    content = {"en": {"sms": {"body": "Welcome {{ recipient.name or name }}"}}}
    response = admin_client.post("/admin/notify/template/add/", {
        "app": app_key[0].id, "name": "welcome", "category": "general", "default_locale": "en",
        "versions-TOTAL_FORMS": "1", "versions-INITIAL_FORMS": "0", "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000", "versions-0-content": json.dumps(content), "versions-0-variants": ""})
    assert response.status_code == 302, response.content[:3000]
    template = Template.objects.get(app=app_key[0], name="welcome")
    assert list(template.versions.values_list("number", "content", "variants", "published_at")) == [
        (1, content, [], None)]
    send = {"recipient": "adm", "template": "welcome", "channels": ["sms"], "data": {"name": "Ann"}}
    assert api.post("/api/v1/notifications", send, format="json").status_code == 404  # nothing published yet
    admin_client.post("/admin/notify/template/", {"action": "publish_latest_draft", "_selected_action": [template.id]})
    body = api.post("/api/v1/notifications", send, format="json").json()
    assert Notification.objects.get(id=body["id"]).content["sms"]["body"] == "Welcome Ann"


def test_replay_action_and_command_requeue_dead_letters_once(admin_client, sent, capsys):
    by_channel = {d["channel"]: d["id"] for d in sent["deliveries"]}
    assert set(by_channel) == {"sms", "email"}
    Delivery.objects.filter(id__in=by_channel.values()).update(status="dead_lettered", reason="retries_exhausted:503")
    response = admin_client.post("/admin/notify/delivery/", {"action": "replay_dead_letters",
                                                             "_selected_action": [by_channel["email"]]})
    assert response.status_code == 302
    assert Delivery.objects.get(id=by_channel["email"]).status == "queued"
    call_command("deadletters", "list")
    out = capsys.readouterr().out
    assert "1 dead-lettered deliveries" in out and by_channel["sms"] in out
    call_command("deadletters", "replay", "--channel", "sms")
    assert Delivery.objects.get(id=by_channel["sms"]).status == "queued"
    call_command("deadletters", "replay", "--id", by_channel["email"])  # not dead any more: left alone
    assert "replayed 0 deliveries" in capsys.readouterr().out
    for delivery_id in by_channel.values():
        assert DeliveryLog.objects.filter(delivery_id=delivery_id, reason="replayed").count() == 1


def test_replay_removes_the_dead_letter_messages_of_replayed_deliveries_only(sent, empty_queues, capsys):
    """The dead-letter queues must end up holding what is still dead: the replayed delivery's
    message is acknowledged, another delivery's (still dead) goes back to its queue."""
    from notify import deadletters

    by_channel = {d["channel"]: d["id"] for d in sent["deliveries"]}
    Delivery.objects.filter(id__in=by_channel.values()).update(status="dead_lettered", reason="max_attempts")
    for channel, delivery_id in by_channel.items():
        deadletters.publish_dead_letter(channel, delivery_id, "max_attempts")
    assert {c: n for c, n in deadletters.queue_depths().items() if c in by_channel} == {"sms": 1, "email": 1}

    call_command("deadletters", "replay", "--id", by_channel["email"])
    assert "replayed 1 deliveries; removed 1 messages" in capsys.readouterr().out
    depths = deadletters.queue_depths()
    assert (depths["email"], depths["sms"]) == (0, 1)
    call_command("deadletters", "replay", "--channel", "sms")
    assert "replayed 1 deliveries; removed 1 messages" in capsys.readouterr().out
    assert deadletters.queue_depths()["sms"] == 0

"""The Django admin: every page of the notify models renders, templates and opt-outs are
editable there and take effect on the next send, and dead letters can be replayed."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from notify.models import Delivery, DeliveryLog, Notification, Recipient, Template

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


@pytest.mark.parametrize("model", ["app", "appapikey", "recipient", "preference", "template", "notification", "delivery"])
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


def test_template_edited_in_the_admin_is_used_at_once_and_versioned(admin_client, api, sent, app_key):
    template = Template.objects.get(app=app_key[0], name="order-shipped")
    content = dict(template.content, sms={"body": "NEW {{ order }}"})
    import json

    response = admin_client.post(f"/admin/notify/template/{template.id}/change/", {
        "app": app_key[0].id, "name": "order-shipped", "category": "orders", "locale": "",
        "content": json.dumps(content)})
    assert response.status_code == 302, response.content[:2000]
    assert Template.objects.get(id=template.id).version == template.version + 1
    body = api.post("/api/v1/notifications", {"recipient": "adm", "template": "order-shipped", "channels": ["sms"],
                                              "data": {"order": "9"}}, format="json").json()
    assert Notification.objects.get(id=body["id"]).content["sms"]["body"] == "NEW 9"


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

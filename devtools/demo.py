"""The quick-start demo: an app with an API key, a template, a recipient with an iPhone, an
Android phone, a desktop browser subscription, a phone number and an email address, and one
notification sent through the real API, then followed to the provider sandbox."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request

from django.utils import timezone

from notify.models import FINAL_STATUSES, App, AppAPIKey, Template, TemplateVersion

DEMO_TEMPLATE = {
    "push": {"title": "{{ name }}님, 주문이 발송되었어요 📦", "body": "Order {{ order }} ships today. 오늘 출발합니다!",
             "data": {"order": "{{ order }}"}},
    "sms": {"body": "[notify] {{ name }}님, 주문 {{ order }} 발송 완료 📦"},
    "email": {"subject": "Your order {{ order }} has shipped / 주문 발송 안내",
              "text": "Hello {{ name }},\n\nOrder {{ order }} is on its way. 감사합니다 🙏",
              "html": "<p>Hello {{ name }},</p><p>Order <b>{{ order }}</b> is on its way. 감사합니다 🙏</p>"},
}


def fcm_token() -> str:
    """A registration token in FCM's observed format: instance id, ':APA91b', then base64url."""
    return secrets.token_urlsafe(16)[:22] + ":APA91b" + secrets.token_urlsafe(100)[:134]


def create_app(name: str = "demo") -> tuple[App, str]:
    """Create (or reuse) an app with a demo template; return it with a new API key."""
    app, _ = App.objects.get_or_create(name=name)
    template, _ = Template.objects.get_or_create(app=app, name="order-shipped",
                                                 defaults={"category": "orders", "default_locale": "ko"})
    if not template.versions.exists():
        TemplateVersion.objects.create(template=template, number=1, content={"ko": DEMO_TEMPLATE},
                                       published_at=timezone.now())
    _, key = AppAPIKey.objects.create_key(name=f"{name} key", app=app)
    return app, key


def call(api_url: str, key: str, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    """One JSON call to the API; returns (status, parsed body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api_url + path, data=data, method=method, headers={
        "Authorization": f"Api-Key {key}", "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def sandbox_subscription(control_url: str) -> dict:
    """A Web Push subscription made by the sandbox's push service, as a browser would."""
    request = urllib.request.Request(control_url + "/webpush/subscriptions", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def run_demo(api_url: str, control_url: str, key: str, out=print) -> dict:
    """Register the demo recipient through the API, send one notification, wait for every
    delivery to finish and print where each arrived. Returns the final notification."""
    user = f"demo-{secrets.token_hex(3)}"
    status, body = call(api_url, key, "PUT", f"/api/v1/recipients/{user}", {
        "name": "김지우", "locale": "ko-KR", "timezone": "Asia/Seoul",
        "email": "jiwoo.kim@example.com", "phone": "+821012345678"})
    assert status in (200, 201), body
    devices = [
        {"platform": "ios", "token": secrets.token_hex(32)},
        {"platform": "android", "token": fcm_token()},
        {"platform": "web", "subscription": sandbox_subscription(control_url)},
    ]
    for device in devices:
        status, body = call(api_url, key, "POST", f"/api/v1/recipients/{user}/devices", device)
        assert status in (200, 201), body
    status, accepted = call(api_url, key, "POST", "/api/v1/notifications",
                            {"recipient": user, "template": "order-shipped", "data": {"name": "지우", "order": "A-1042"},
                             "priority": "high"}, headers={"Idempotency-Key": secrets.token_hex(8)})
    assert status == 202, accepted
    out(f"accepted notification {accepted['id']} with {len(accepted['deliveries'])} deliveries")
    deadline = time.monotonic() + 60
    while True:
        _, notification = call(api_url, key, "GET", f"/api/v1/notifications/{accepted['id']}")
        if all(d["status"] in FINAL_STATUSES for d in notification["deliveries"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    with urllib.request.urlopen(control_url + "/records?accepted=true", timeout=10) as response:
        records = json.loads(response.read())["records"]
    by_delivery = {r.get("delivery_id"): r for r in records}
    for d in notification["deliveries"]:
        record = by_delivery.get(d["id"])
        where = f"{record['provider']} sandbox {record['method']} {record['path']} → {record['status']}" if record else "-"
        out(f"  {d['channel']:8} {d['status']:10} {str(d['to'])[:48]:48} {where}")
    return notification

"""The hosted preference page (notify.preferences): first through Django's test client (what it
shows, what a POST writes, CSRF, refused links, every language), then in real headless Chromium
against pytest-django's live server on a phone-sized window: switch a category off, and the
next send of that category is suppressed; a tampered link is refused. Screenshots go to
var/screenshots/."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils.html import escape
from django.utils import timezone

from notify import cache, preferences
from notify.models import Preference, Recipient
from tests.browser import start_chromium
from tests.test_admin_preview import assert_no_alert, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TITLES = {"en": "Notification preferences", "ko": "알림 설정", "de": "Benachrichtigungseinstellungen",
          "fr": "Préférences de notification", "es": "Preferencias de notificaciones", "ja": "通知設定"}


@pytest.fixture
def recipient(api) -> Recipient:
    r = api.put("/api/v1/recipients/jiwoo", {"name": "김지우", "locale": "ko-KR", "timezone": "Asia/Seoul",
                                               "email": "jiwoo@example.com", "phone": "+821012345678"}, format="json")
    assert r.status_code == 201, r.content
    assert api.put("/api/v1/categories/security", {"label": "Security", "description": "Sign-in codes",
                                                   "required": True}, format="json").status_code == 201
    assert api.put("/api/v1/categories/marketing", {"label": "News and offers", "defaults": {"sms": False}},
                   format="json").status_code == 201
    assert api.put("/api/v1/categories/orders", {"label": "Orders"}, format="json").status_code == 201
    return Recipient.objects.get(external_id="jiwoo")


def page_path(recipient: Recipient) -> str:
    url, _ = preferences.link(recipient.app_id, recipient.id)
    return url[len(settings.NOTIFY_PUBLIC_URL.rstrip("/")):]


def send(api, category: str, channels=("email",)) -> dict:
    r = api.post("/api/v1/notifications", {"recipient": "jiwoo", "category": category, "channels": list(channels),
                                           "content": {"email": {"subject": "s", "text": "t"}, "sms": {"body": "b"}}},
                 format="json")
    assert r.status_code == 202, r.content
    return {d["channel"]: (d["status"], d["reason"]) for d in r.json()["deliveries"]}


def form_of(response) -> dict:
    """What the page's form posts as shown (checked boxes, the selected pause length)."""
    ctx = response.context
    data = {f"ch:{c['name']}": "on" for c in ctx["channels"] if c["on"]}
    for category in ctx["categories"]:
        if not category["required"]:
            data.update({f"c:{category['name']}:{c['name']}": "on" for c in category["channels"] if c["on"]})
    if ctx["muted"]:
        data.update({"muted": "on", "pause": "keep"})
    return data


def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def post_page(client: Client, path: str, data: dict):
    token = client.cookies["csrftoken"].value
    return client.post(path, {**data, "csrfmiddlewaretoken": token})


# --- through the test client -------------------------------------------------------------------

def test_page_shows_reachable_channels_and_categories_in_the_recipients_language(recipient):
    client = csrf_client()
    response = client.get(page_path(recipient))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="ko">' in html and '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "알림 설정" in html and "모두 일시 중지" in html and "항상 켜짐" in html
    assert response["Cache-Control"] == "no-store" and response["Referrer-Policy"] == "same-origin"
    ctx = response.context
    # No device: only SMS and email reach this recipient.
    assert [c["name"] for c in ctx["channels"]] == ["sms", "email"]
    assert [c["label"] for c in ctx["channels"]] == ["문자 메시지(SMS)", "이메일"]
    by_name = {c["name"]: c for c in ctx["categories"]}
    assert list(by_name) == ["security", "marketing", "orders"]  # required first
    assert 'name="c:security:' not in html  # always on, nothing to switch
    assert {c["name"]: c["on"] for c in by_name["marketing"]["channels"]} == {"sms": False, "email": True}
    assert "<script" not in html and "://" not in html  # no script, nothing from another host


def test_switching_a_category_off_writes_a_page_preference_and_the_next_send_is_suppressed(api, recipient):
    assert send(api, "marketing") == {"email": ("queued", None)}  # the profile is cached now
    client = csrf_client()
    path = page_path(recipient)
    data = form_of(client.get(path))
    data.pop("c:marketing:email")
    response = post_page(client, path, data)
    assert response.status_code == 302 and response["Location"] == f"{path}?saved=1"
    assert [(p.channel, p.category, p.enabled, p.source) for p in Preference.objects.all()] == [
        ("email", "marketing", False, "page")]  # only what changed
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}
    assert send(api, "orders") == {"email": ("queued", None)}
    shown = client.get(f"{path}?saved=1")
    assert "설정이 저장되었습니다." in shown.content.decode()
    assert form_of(shown) == data


def test_a_channel_switched_off_stops_every_category_on_it_and_stays_as_shown(api, recipient):
    client = csrf_client()
    path = page_path(recipient)
    data = form_of(client.get(path))
    data.pop("ch:email")
    post_page(client, path, data)
    assert send(api, "orders") == {"email": ("suppressed", "opted_out")}
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}
    assert send(api, "security") == {"email": ("queued", None)}  # required
    # Back on, with only "orders" ticked: marketing stays off, as the page showed it.
    shown = form_of(client.get(path))
    assert "ch:email" not in shown and "c:orders:email" not in shown
    post_page(client, path, {**shown, "ch:email": "on", "c:orders:email": "on"})
    assert send(api, "orders") == {"email": ("queued", None)}
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}


def test_pause_everything_mutes_until_the_chosen_end_and_can_be_lifted(api, recipient):
    client = csrf_client()
    path = page_path(recipient)
    data = form_of(client.get(path))
    before = timezone.now()
    post_page(client, path, {**data, "muted": "on", "pause": "7d"})
    recipient.refresh_from_db()
    assert recipient.muted and abs((recipient.muted_until - before) - dt.timedelta(days=7)) < dt.timedelta(minutes=1)
    assert send(api, "orders") == {"email": ("suppressed", "muted")}
    assert send(api, "security") == {"email": ("queued", None)}
    shown = client.get(path)
    assert shown.context["muted"] and "일시 중지됨" in shown.content.decode()
    post_page(client, path, form_of(shown))  # "as it is": the end time stays
    recipient.refresh_from_db()
    assert recipient.muted and abs((recipient.muted_until - before) - dt.timedelta(days=7)) < dt.timedelta(minutes=1)
    data = form_of(client.get(path))
    data.pop("muted")
    post_page(client, path, data)
    recipient.refresh_from_db()
    assert (recipient.muted, recipient.muted_until) == (False, None)
    assert send(api, "orders") == {"email": ("queued", None)}


def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(recipient):
    client = csrf_client()
    path = page_path(recipient)
    client.get(path)
    assert client.post(path, {}).status_code == 403
    assert not Preference.objects.exists()


def test_tampered_expired_and_orphaned_links_are_refused(recipient, settings):
    client = Client()
    path = page_path(recipient)
    token = path.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = client.get(f"/preferences/{tampered}", HTTP_ACCEPT_LANGUAGE="de-DE,de;q=0.9")
    assert response.status_code == 400
    assert "Dieser Link ist ungültig." in response.content.decode() and 'lang="de"' in response.content.decode()
    assert client.post(f"/preferences/{tampered}", {"ch:email": "on"}).status_code == 400
    # Another app's id in a token signed elsewhere (the unsubscribe link's salt) is refused too.
    from django.core import signing
    forged = signing.dumps({"a": recipient.app_id, "r": recipient.id}, salt="notify.unsubscribe", compress=True)
    assert client.get(f"/preferences/{forged}").status_code == 400

    settings.NOTIFY_PREFERENCE_LINK_MAX_AGE = -1
    response = client.get(path)
    assert response.status_code == 410
    assert "링크가 만료되었습니다." in response.content.decode()  # the recipient's language
    settings.NOTIFY_PREFERENCE_LINK_MAX_AGE = 3600
    recipient.delete()
    assert client.get(path).status_code == 404
    assert not Preference.objects.exists()


@pytest.mark.parametrize("locale, lang", [("en-US", "en"), ("ko", "ko"), ("de-AT", "de"), ("fr-CA", "fr"),
                                          ("es-419", "es"), ("ja-JP", "ja"), ("pt-BR", "en")])
def test_every_language_of_the_page(recipient, locale, lang):
    Recipient.objects.filter(pk=recipient.pk).update(locale=locale)
    cache.forget_recipient(recipient.app_id, recipient.external_id)
    html = Client().get(page_path(recipient)).content.decode()
    assert f'<html lang="{lang}">' in html and f"<h1>{TITLES[lang]}</h1>" in html


# --- in a real browser -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    """Headless Chromium (Debian's package, through its ChromeDriver; nothing is downloaded) on
    a 375 × 812 window, an iPhone's CSS viewport."""
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), "chromedriver-preferences.log",
                            size=(375, 812))
    yield driver
    driver.quit()


def screenshot(driver, name: str) -> None:
    shot = Path(settings.VAR_DIR) / "screenshots" / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    assert driver.save_screenshot(str(shot))
    raw = shot.read_bytes()
    assert len(raw) > 1000 and raw.startswith(b"\x89PNG\r\n\x1a\n")


def test_browser_switch_a_category_off_on_a_phone_then_a_send_is_suppressed(phone, live_server, api, recipient):
    from selenium.webdriver.common.by import By

    # German here (the Korean page is checked above): this machine's Chromium has no CJK font,
    # and the screenshot should be readable.
    api.put("/api/v1/recipients/jiwoo", {"locale": "de-DE"}, format="json")
    assert send(api, "marketing") == {"email": ("queued", None)}
    phone.delete_all_cookies()
    phone.get(live_server.url + page_path(recipient))
    wait_for(phone, "form#preferences")
    assert_no_alert(phone)
    assert phone.find_element(By.TAG_NAME, "h1").text == "Benachrichtigungseinstellungen"
    # Readable on a phone: nothing wider than the viewport, tap targets at least 44 px high.
    assert phone.execute_script("return document.documentElement.scrollWidth") <= \
        phone.execute_script("return window.innerWidth")
    assert phone.find_element(By.ID, "save").size["height"] >= 44
    assert phone.find_element(By.CSS_SELECTOR, '[data-category="security"] .always').text == "Immer aktiv"
    assert not phone.find_elements(By.CSS_SELECTOR, '[data-category="security"] input')
    box = phone.find_element(By.ID, "c-marketing-email")
    assert box.is_selected()
    screenshot(phone, "preference-page-phone.png")

    phone.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    assert not box.is_selected()
    phone.find_element(By.ID, "save").click()
    saved = wait_for(phone, "#saved")
    assert saved.text == "Ihre Einstellungen wurden gespeichert."
    assert not phone.find_element(By.ID, "c-marketing-email").is_selected()
    assert phone.find_element(By.ID, "c-orders-email").is_selected()
    screenshot(phone, "preference-page-phone-saved.png")

    row = Preference.objects.get(recipient=recipient)
    assert (row.channel, row.category, row.enabled, row.source) == ("email", "marketing", False, "page")
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}
    assert send(api, "orders") == {"email": ("queued", None)}
    assert send(api, "security") == {"email": ("queued", None)}


def test_browser_tampered_link_is_refused(phone, live_server, recipient):
    from selenium.webdriver.common.by import By

    path = page_path(recipient)
    phone.get(live_server.url + path[:-3] + ("xyz" if not path.endswith("xyz") else "abc"))
    refused = wait_for(phone, "#refused")
    assert phone.find_element(By.TAG_NAME, "h1").text == "This link is not valid."  # Chromium asks for en-US
    assert not phone.find_elements(By.CSS_SELECTOR, "form")
    assert refused.is_displayed()
    screenshot(phone, "preference-page-refused.png")


# --- the one-click unsubscribe page (notify.unsubscribe) -----------------------------------------

def unsubscribe_path(api, category: str = "marketing") -> str:
    """The path of the unsubscribe link of a new email of ``category`` to jiwoo."""
    from django.core import signing

    r = api.post("/api/v1/notifications", {"recipient": "jiwoo", "category": category, "channels": ["email"],
                                           "content": {"email": {"subject": "s", "text": "t"}}}, format="json")
    assert r.status_code == 202, r.content
    # The token notify.unsubscribe.unsubscribe_url puts in the List-Unsubscribe header.
    return f"/unsubscribe/{signing.dumps(r.json()['deliveries'][0]['id'], salt='notify.unsubscribe', compress=True)}"


def test_the_unsubscribe_page_asks_in_the_recipients_language_then_opts_out(api, recipient):
    path = unsubscribe_path(api)
    page = Client().get(path)
    html = page.content.decode()
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    assert '<html lang="ko">' in html and "<title>수신 거부</title>" in html and 'name="viewport"' in html
    assert f"{escape(recipient.app.name)}에서 보내는 이런 이메일을 더 이상 받지 않으시겠어요?" in html
    assert f'href="{settings.NOTIFY_PUBLIC_URL.rstrip("/")}/preferences/' in html and "알림 설정 관리" in html
    assert not Preference.objects.exists()  # a GET (a link scanner) changes nothing

    done = Client().post(path, {"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "<title>수신 거부되었습니다.</title>" in done.content.decode()
    row = Preference.objects.get(recipient=recipient)
    assert (row.channel, row.category, row.enabled, row.source) == ("email", "marketing", False, "unsubscribe")


def test_a_bad_or_dead_unsubscribe_link_is_a_page_for_people_and_json_for_providers(api, recipient):
    path = unsubscribe_path(api)
    page = Client().get(path[:-2] + ("AA" if not path.endswith("AA") else "BB"), HTTP_ACCEPT_LANGUAGE="fr")
    assert page.status_code == 400 and 'lang="fr"' in page.content.decode()
    assert "Ce lien n’est pas valide." in page.content.decode()
    answer = Client().post(path[:-2] + ("AA" if not path.endswith("AA") else "BB"), {"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_token"
    assert api.post("/api/v1/recipients/jiwoo/erase").status_code == 200
    gone = Client().get(path)
    assert gone.status_code == 404 and "This page is no longer available." in gone.content.decode()
    assert Client().post(path, {"List-Unsubscribe": "One-Click"}).status_code == 404


def test_browser_unsubscribe_on_a_phone(phone, live_server, api, recipient):
    from selenium.webdriver.common.by import By

    api.put("/api/v1/recipients/jiwoo", {"locale": "de-DE"}, format="json")  # a font this Chromium has
    phone.delete_all_cookies()
    phone.get(live_server.url + unsubscribe_path(api))
    button = wait_for(phone, "#unsubscribe-button")
    assert_no_alert(phone)
    assert phone.title == "Abmelden" and button.text == "Abmelden" and button.size["height"] >= 44
    assert phone.execute_script("return document.documentElement.scrollWidth") <= \
        phone.execute_script("return window.innerWidth")
    screenshot(phone, "unsubscribe-phone.png")
    # The icon the browser asks every page's host for is there and is an image it can show (a 404
    # was an error in its console).
    assert phone.execute_async_script(
        "const done = arguments[0], icon = new Image();"
        "icon.onload = () => done([icon.naturalWidth, icon.naturalHeight]); icon.onerror = () => done('error');"
        "icon.src = '/favicon.ico';") == [32, 32]
    button.click()
    assert wait_for(phone, "#done").text == "Sie sind abgemeldet."
    link = phone.find_element(By.ID, "preferences-link")
    assert link.text == "Benachrichtigungseinstellungen verwalten"
    assert send(api, "marketing") == {"email": ("suppressed", "opted_out")}
    assert send(api, "orders") == {"email": ("queued", None)}
    # The link is on NOTIFY_PUBLIC_URL; here the page is the live server's.
    phone.get(live_server.url + urllib.parse.urlsplit(link.get_attribute("href")).path)
    wait_for(phone, "form#preferences")
    assert not phone.find_element(By.ID, "c-marketing-email").is_selected()


# --- the link in emails ------------------------------------------------------------------------

def test_email_parts_add_the_preference_link_to_each_body_the_email_has():
    from channels.base import Message
    from channels.email import EmailChannel

    url = "https://n.example/preferences/a:b&c"
    label = "Réglages & <avis>"
    content = {"subject": "s", "text": "Hello\n\n", "html": "<html><BODY><p>Hi</p></BODY></html>"}
    parts = EmailChannel.email_parts(Message("d-1", "a@example.com", content, preferences_url=url,
                                             preferences_label=label))
    assert parts.text == f"Hello\n\n-- \n{label}: {url}\n"
    assert parts.html == ('<html><BODY><p>Hi</p><p style="font-size:12px;color:#666" class="notify-preferences">'
                          '<a href="https://n.example/preferences/a:b&amp;c">Réglages &amp; &lt;avis&gt;</a></p>'
                          "</BODY></html>")
    html_only = EmailChannel.email_parts(Message("d-2", "a@example.com", {"subject": "s", "html": "<p>Hi</p>"},
                                                 preferences_url=url))
    assert html_only.text is None and html_only.html.startswith("<p>Hi</p><p ") and html_only.html.endswith("</p>")
    assert '<a href="https://n.example/preferences/a:b&amp;c">https://n.example/preferences/a:b&amp;c</a>' in \
        html_only.html  # without a label, the link shows its URL
    plain = EmailChannel.email_parts(Message("d-3", "a@example.com", content))
    assert (plain.text, plain.html) == (content["text"], content["html"])

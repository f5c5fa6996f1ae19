"""The admin's template preview page (notify.admin.TemplateAdmin.preview_view).

Page-level tests with Django's test client, then browser tests in real headless Chromium
(Debian's /usr/bin/chromium driven through /usr/bin/chromedriver by Selenium; scripts/browser.sh
installs both, `make test` runs it) against pytest-django's live server: log in through the
admin's login form, open the preview from the template's change page, submit data with HTML and
quotes in it, and check what the page shows per channel.
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from notify.models import Recipient, Template, TemplateVersion
from notify.preview import preview
from tests.browser import click_to_load, start_chromium

pytestmark = pytest.mark.django_db(transaction=True)

NASTY = "O'Brien & \"x\" <script>alert(1)</script>"
PASSWORD = "pw-for-tests-only"


@pytest.fixture
def template(app_key) -> Template:
    return Template.objects.get(app=app_key[0], name="order-shipped")


@pytest.fixture
def admin_client(client, app_key):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    client.login(username="ops", password=PASSWORD)
    return client


def preview_url(template: Template) -> str:
    return f"/admin/notify/template/{template.id}/preview/"


def post_preview(client, template, data, **fields):
    return client.post(preview_url(template), {"version": fields.pop("version", 1), "locale": "", "variant": "",
                                               "recipient": "", "data": json.dumps(data), **fields})


# --- the page, through Django's test client ----------------------------------------------------

def test_preview_page_offers_every_version_and_a_data_skeleton(admin_client, template):
    TemplateVersion.objects.create(template=template, number=2, content={"ko": {"sms": {"body": "v2 {{ coupon }}"}}})
    page = admin_client.get(preview_url(template))
    assert page.status_code == 200
    html = page.content.decode()
    assert "v2 (draft)" in html and "v1 (published" in html
    form = page.context["form"]
    assert form.initial["version"] == 2  # the newest version, draft or not
    assert form.initial["data"] == {"coupon": ""}
    textarea = re.search(r'<textarea name="data"[^>]*>(.*?)</textarea>', html, re.S).group(1)
    assert json.loads(unescape(textarea)) == {"coupon": ""}  # an object, as the form wants it back
    page = admin_client.get(preview_url(template) + "?version=1")
    assert page.context["form"].initial["data"] == {"name": "", "order": ""}
    for odd in ("9", "²", "x", "99999999999999999999"):  # no such version: the newest
        assert admin_client.get(preview_url(template), {"version": odd}).context["form"].initial["version"] == 2


def test_preview_escapes_data_once_and_shows_every_channel(admin_client, template):
    response = post_preview(admin_client, template, {"name": NASTY, "order": "A-1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)" not in html
    # Text parts: the literal name, escaped once for HTML.
    assert "[notify] O&#x27;Brien &amp; &quot;x&quot; &lt;script&gt;alert(1)&lt;/script&gt;님" in html
    # The email's HTML part (escaped by the template engine) inside srcdoc, escaped again as an
    # attribute: the iframe shows the text, it runs nothing.
    assert 'sandbox=""' in html and "srcdoc=\"&lt;p&gt;Hello O&amp;#39;Brien &amp;amp; " in html
    columns = {c["channel"]: c for c in response.context["columns"]}
    assert set(columns) == {"apns", "fcm", "webpush", "sms", "email"}
    assert columns["sms"]["encoding"] == "UCS-2" and columns["sms"]["segments"] >= 1
    assert columns["apns"]["payload_limit"] == 4096 and 0 < columns["apns"]["payload_bytes"] < 4096


def test_missing_variables_are_a_form_error_naming_each(admin_client, template):
    response = post_preview(admin_client, template, {})
    assert response.status_code == 200 and response.context["result"] is None
    assert response.context["form"].errors["data"] == [
        "Missing variables: name, order. The template uses them and the data does not give them."]


def test_provider_refusals_are_marked_per_channel(admin_client, template):
    response = post_preview(admin_client, template, {"name": "x" * 5000, "order": "1"})
    html = response.content.decode()
    columns = {c["channel"]: c for c in response.context["columns"]}
    for channel in ("apns", "fcm", "webpush"):
        assert columns[channel]["error"]["code"] == "payload_too_large"
    assert columns["sms"]["error"]["code"] in ("body_too_long", "too_many_segments")
    assert columns["email"]["error"] is None
    assert html.count('class="errornote notify-preview-error" data-code="payload_too_large"') == 3
    assert "<strong>payload_too_large</strong>: " in html and "payload_too_large: payload_too_large" not in html


def test_recipient_locale_and_variant_drive_the_choice_unless_given(admin_client, template, app_key):
    variants = [{"name": "a", "weight": 1, "content": {"ko": {"sms": {"body": "A {{ order }}"}},
                                                       "en": {"sms": {"body": "A-en {{ order }}"}}}}]
    TemplateVersion.objects.create(template=template, number=2, variants=variants,
                                   content={"ko": {"sms": {"body": "ko {{ order }}"}},
                                            "en": {"sms": {"body": "en {{ order }}"}}})
    Recipient.objects.create(app=app_key[0], external_id="eve", name="Eve", locale="en-GB")
    result = post_preview(admin_client, template, {"order": "7"}, version=2, recipient="eve").context["result"]
    assert (result["locale"], result["variant"], result["channels"]["sms"]["content"]["body"]) == ("en", "a", "A-en 7")
    result = post_preview(admin_client, template, {"order": "7"}, version=2, recipient="eve",
                          locale="ko").context["result"]
    assert result["channels"]["sms"]["content"]["body"] == "A 7"
    response = post_preview(admin_client, template, {"order": "7"}, version=2, recipient="nobody")
    assert "No recipient" in response.context["form"].errors["recipient"][0]
    response = post_preview(admin_client, template, ["not", "an", "object"])
    assert "must be a JSON object" in response.context["form"].errors["data"][0]


def test_preview_is_for_staff_with_view_permission_only(client, template):
    assert client.get(preview_url(template)).status_code == 302  # to the login page
    user = User.objects.create_user("clerk", password=PASSWORD, is_staff=True)
    client.login(username="clerk", password=PASSWORD)
    assert client.get(preview_url(template)).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_template"))
    assert client.get(preview_url(template)).status_code == 200


# --- in a real browser -------------------------------------------------------------------------



@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium from Debian's packages through its ChromeDriver; both paths are given,
    so Selenium Manager never runs (nothing is downloaded)."""
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), "chromedriver.log")
    yield driver
    driver.quit()


def wait_for(driver, css: str, timeout: float = 15):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def assert_no_alert(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"the page raised a JavaScript alert: {text!r}")


def open_preview_in_browser(browser, live_server, template) -> None:
    """Log in through the admin's login form, then follow the change page's Preview link."""
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/?next=/admin/notify/template/{template.id}/change/")
    browser.find_element(By.ID, "id_username").send_keys("ops")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_to_load(browser, "#login-form input[type=submit]")
    wait_for(browser, "a.notify-preview-link").click()
    wait_for(browser, "#template_preview_form")
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Preview {template.name}"


def submit_data(browser, data: dict) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "id_data")
    field.clear()
    field.send_keys(json.dumps(data))
    click_to_load(browser, "#template_preview_form input[name=_preview]")


def test_browser_preview_shows_one_column_per_channel_escaped(browser, live_server, template):
    from selenium.webdriver.common.by import By

    data = {"name": NASTY, "order": "A-1042"}
    expected = preview(template, template.versions.get(number=1), data)["channels"]
    open_preview_in_browser(browser, live_server, template)
    submit_data(browser, data)
    result = wait_for(browser, "#preview-result")
    assert_no_alert(browser)

    columns = result.find_elements(By.CSS_SELECTOR, ".notify-preview-channel")
    assert [c.get_attribute("data-channel") for c in columns] == list(expected)  # apns fcm webpush sms email
    assert len(columns) == 5
    for column in columns:
        fields = column.find_elements(By.CSS_SELECTOR, ".notify-field")
        assert fields and any(f.get_attribute("textContent").strip() for f in fields), column.text
    # Side by side: one row, left to right.
    tops = {c.location["y"] for c in columns}
    lefts = [c.location["x"] for c in columns]
    assert len(tops) == 1 and lefts == sorted(lefts) and len(set(lefts)) == 5

    by_channel = {c.get_attribute("data-channel"): c for c in columns}
    sms = by_channel["sms"]
    sms_text = sms.find_element(By.CSS_SELECTOR, '[data-field="body"]')
    assert sms_text.get_attribute("textContent") == expected["sms"]["content"]["body"]
    assert NASTY in sms_text.get_attribute("textContent")  # the literal name, not escaped twice
    assert "&lt;script&gt;" in sms_text.get_attribute("innerHTML")  # escaped once in the markup
    assert "&amp;lt;" not in sms_text.get_attribute("innerHTML")
    assert result.find_elements(By.TAG_NAME, "script") == []  # nothing became an element
    segments = sms.find_element(By.CSS_SELECTOR, ".notify-segments")
    assert segments.get_attribute("data-segments") == str(expected["sms"]["content_info"]["segments"])
    assert sms.find_element(By.CSS_SELECTOR, ".notify-encoding").text == expected["sms"]["content_info"]["encoding"]

    for channel in ("apns", "fcm", "webpush"):
        payload = by_channel[channel].find_element(By.CSS_SELECTOR, ".notify-payload")
        info = expected[channel]["content_info"]
        assert payload.get_attribute("data-bytes") == str(info["payload_bytes"])
        assert f"{info['payload_bytes']} / {info['payload_limit']} bytes" in payload.text
        title = by_channel[channel].find_element(By.CSS_SELECTOR, '[data-field="title"]')
        assert title.get_attribute("textContent") == expected[channel]["content"]["title"]
        assert not by_channel[channel].find_elements(By.CSS_SELECTOR, ".notify-preview-error")

    email = by_channel["email"]
    assert NASTY in email.find_element(By.CSS_SELECTOR, '[data-field="subject"], [data-field="text"]').text or \
        NASTY in email.find_element(By.CSS_SELECTOR, '[data-field="text"]').get_attribute("textContent")
    frame = email.find_element(By.CSS_SELECTOR, "iframe.notify-email-html")
    assert frame.get_attribute("sandbox") == ""
    browser.switch_to.frame(frame)
    try:
        assert NASTY in browser.find_element(By.TAG_NAME, "body").text  # shown as text by the email's HTML
        assert browser.find_elements(By.TAG_NAME, "script") == []
    finally:
        browser.switch_to.default_content()
    assert_no_alert(browser)

    for _ in range(2):  # the whole page (the window's height includes more than the page's)
        height = browser.execute_script(
            "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight")
        browser.set_window_size(1600, max(1000, height + 20))
    shot = Path(settings.VAR_DIR) / "screenshots" / "admin-template-preview.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    assert browser.save_screenshot(str(shot))
    browser.set_window_size(1600, 1000)
    raw = shot.read_bytes()
    assert len(raw) > 1000 and raw.startswith(b"\x89PNG\r\n\x1a\n")


def test_browser_missing_variable_is_a_form_error_naming_it(browser, live_server, template):
    from selenium.webdriver.common.by import By

    open_preview_in_browser(browser, live_server, template)
    submit_data(browser, {"name": "Jiwoo"})
    error = wait_for(browser, ".field-data .errorlist")
    assert error.text == "Missing variables: order. The template uses them and the data does not give them."
    assert "Please correct the error below." in browser.find_element(By.CSS_SELECTOR, "p.errornote").text
    assert browser.find_elements(By.ID, "preview-result") == []
    # What was typed stays in the form.
    assert json.loads(browser.find_element(By.ID, "id_data").get_attribute("value")) == {"name": "Jiwoo"}
    submit_data(browser, {})
    assert "Missing variables: name, order." in wait_for(browser, ".field-data .errorlist").text
    assert_no_alert(browser)


def test_browser_preview_of_the_skeleton_as_offered(browser, live_server, template):
    """Preview pressed without touching the data: the skeleton in the textarea is a JSON object
    (it was once written as a JSON string, and the form refused its own offer)."""
    from selenium.webdriver.common.by import By

    open_preview_in_browser(browser, live_server, template)
    assert json.loads(browser.find_element(By.ID, "id_data").get_attribute("value")) == {"name": "", "order": ""}
    click_to_load(browser, "#template_preview_form input[name=_preview]")
    result = wait_for(browser, "#preview-result")
    assert browser.find_elements(By.CSS_SELECTOR, ".errorlist, p.errornote") == []
    assert len(result.find_elements(By.CSS_SELECTOR, ".notify-preview-channel")) == 5
    assert_no_alert(browser)


def test_browser_preview_of_a_draft_version(browser, live_server, template):
    """A draft (never sent) previews like a published version."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    TemplateVersion.objects.create(template=template, number=2,
                                   content={"ko": {"sms": {"body": "Draft for {{ name }}"}}})
    TemplateVersion.objects.filter(number=1, template=template).update(published_at=timezone.now())
    open_preview_in_browser(browser, live_server, template)
    Select(browser.find_element(By.ID, "id_version")).select_by_value("2")
    submit_data(browser, {"name": NASTY})
    result = wait_for(browser, "#preview-result")
    columns = result.find_elements(By.CSS_SELECTOR, ".notify-preview-channel")
    assert [c.get_attribute("data-channel") for c in columns] == ["sms"]
    assert columns[0].find_element(By.CSS_SELECTOR, '[data-field="body"]').get_attribute(
        "textContent") == f"Draft for {NASTY}"
    assert "v2" in result.find_element(By.TAG_NAME, "h2").text
    assert_no_alert(browser)

"""What operators open: liveness and readiness (naming what is down), the API root with its
links, the OpenAPI schema, Swagger UI and ReDoc (in headless Chromium, nothing loaded from
elsewhere, screenshots saved), and the admin styled under gunicorn (WhiteNoise) with deliveries
and their log rows titled by what they are."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.urls import resolve
from django.utils import timezone

from devtools.stack import Stack, StackConfig
from notify.models import Delivery, DeliveryLog, Notification, Recipient
from tests.browser import click_to_load, requested_urls, start_chromium

PASSWORD = "pw-for-tests-only"
#: What a page would load from elsewhere and its Content-Security-Policy stops (ReDoc's logo).
BLOCKED_BY_CSP = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- health ------------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/health/live", "/healthz"])
def test_liveness_answers_without_a_key(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.json() == {"status": "alive"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/health/ready", "/readyz"])
def test_readiness_is_ready_when_every_service_answers(client, path):
    response = client.get(path)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready" and body["down"] == []
    assert list(body["checks"]) == ["postgresql", "rabbitmq", "redis"]
    assert all(check["ok"] and check["ms"] >= 0 for check in body["checks"].values())
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readiness_names_rabbitmq_then_redis_then_postgresql_as_down(client, settings):
    settings.NOTIFY_HEALTH_TIMEOUT = 1
    settings.NOTIFY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    started = time.monotonic()
    response = client.get("/health/ready")
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready" and body["down"] == ["rabbitmq"]
    assert "refused" in body["checks"]["rabbitmq"]["error"].lower()
    assert body["checks"]["postgresql"]["ok"] and body["checks"]["redis"]["ok"]

    settings.NOTIFY_BROKER_URL = os.environ["NOTIFY_BROKER_URL"]
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    body = client.get("/health/ready").json()
    assert body["down"] == ["redis"] and body["checks"]["rabbitmq"]["ok"], body

    settings.REDIS_URL = os.environ["NOTIFY_REDIS_URL"]
    # Only the readiness check reads this copy; the test's own connection stays as it is.
    with pytest.warns(UserWarning, match="Overriding setting DATABASES"):
        settings.DATABASES = {**settings.DATABASES, "default": {**settings.DATABASES["default"], "PORT": closed_port()}}
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.json()["down"] == ["postgresql"], response.content


@pytest.mark.django_db
def test_a_service_that_does_not_answer_is_down_after_the_timeout(client, settings):
    """A port that accepts the connection and then says nothing (a hung broker)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings.NOTIFY_HEALTH_TIMEOUT = 1
        settings.NOTIFY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}//"
        started = time.monotonic()
        body = client.get("/health/ready").json()
        took = time.monotonic() - started
    assert body["down"] == ["rabbitmq"], body
    assert took < 4, took


# --- API root and schema -----------------------------------------------------------------------

@pytest.mark.django_db
def test_api_root_links_every_resource_without_a_key(client):
    response = client.get("/api/v1/")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "notify API" and body["version"]
    links = body["links"]
    for name in ("notifications", "notifications_batch", "notifications_bulk", "notification", "broadcasts",
                 "broadcast", "recipient", "devices", "preferences", "categories", "templates", "template", "schema",
                 "docs", "redoc", "health_live", "health_ready"):
        assert name in links and links[name]["title"], name
    assert links["recipient"]["href"] == "http://testserver/api/v1/recipients/{external_id}"
    assert links["notification"]["href"] == "http://testserver/api/v1/notifications/{notification_id}"
    assert links["broadcast"]["href"] == "http://testserver/api/v1/broadcasts/{broadcast_id}"
    samples = {"{external_id}": "user-1", "{notification_id}": "9b2f4b4e-4c65-4a4f-9d7e-2a4f3f7d8e11",
               "{name}": "order-shipped", "{broadcast_id}": "7"}
    for name, link in links.items():
        path = urlparse(link["href"]).path
        for variable, value in samples.items():
            path = path.replace(variable, value)
        assert "{" not in path, link
        resolve(path)  # Resolver404 if a link leads nowhere


def test_schema_describes_the_root_and_health_endpoints(api):
    response = api.get("/api/v1/schema", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    paths = schema["paths"]
    assert {"/api/v1/", "/health/live", "/health/ready", "/api/v1/notifications"} <= set(paths)
    ready = paths["/health/ready"]["get"]
    assert set(ready["responses"]) == {"200", "503"}
    assert ready["responses"]["503"]["content"]["application/json"]["examples"]
    # The public endpoints need no key; the resources do.
    assert paths["/health/ready"]["get"].get("security") in ([], [{}], None)
    assert paths["/api/v1/notifications"]["post"]["security"] == [{"ApiKeyAuth": []}, {"OAuth2": ["send"]}]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method in ("get", "post", "put", "patch", "delete"):
                assert operation.get("responses"), f"{method.upper()} {path}: no responses"


def test_schema_documents_every_shared_error_with_its_codes_and_an_example(api, client):
    """notify.api.docs: 401 wherever a key is needed, 400/411/413 wherever a body is taken,
    422/429 on the sends; every 4xx has the error body's schema and an example per code."""
    schema = json.loads(api.get("/api/v1/schema", {"format": "json"}).content)
    assert schema["components"]["schemas"]["ApiError"]["properties"]["error"]["required"] == ["code", "message"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if {"ApiKeyAuth": []} in operation.get("security", []):
                assert "401" in responses, f"{method.upper()} {path}"
            if method in ("post", "put", "patch"):
                assert {"400", "411", "413"} <= set(responses), f"{method.upper()} {path}"
            for status, response in responses.items():
                if status.startswith("4"):
                    content = response["content"]["application/json"]
                    assert content["schema"] and content["examples"], f"{method.upper()} {path} {status}"
                    for name, example in content["examples"].items():
                        assert example["value"]["error"]["code"] == name
    for path in ("/api/v1/notifications", "/api/v1/notifications/batch"):
        assert {"422", "429"} <= set(schema["paths"][path]["post"]["responses"])
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert refs <= set(schema["components"]["schemas"]), refs - set(schema["components"]["schemas"])
    # What the API answers is what the schema says.
    answer = client.get("/api/v1/notifications/9b2f4b4e-4c65-4a4f-9d7e-2a4f3f7d8e11")
    documented = schema["paths"]["/api/v1/notifications/{notification_id}"]["get"]["responses"]["401"]
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] in documented["content"]["application/json"]["examples"]


def test_request_examples_are_valid_against_their_schema(api):
    """Every request example the schema shows is a body its own schema accepts (read-only fields
    aside: the request and the answer share components)."""
    import copy

    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schema = json.loads(api.get("/api/v1/schema", {"format": "json"}).content)
    components = copy.deepcopy(schema["components"]["schemas"])
    for component in components.values():
        read_only = {k for k, v in component.get("properties", {}).items() if v.get("readOnly")}
        if "required" in component:
            component["required"] = [r for r in component["required"] if r not in read_only]
    registry = Registry().with_resource("urn:notify", Resource.opaque({"components": {"schemas": components}}))
    checked = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, example in body.get("examples", {}).items():
                ref = body["schema"]["$ref"].replace("#/", "urn:notify#/")
                validator = Draft202012Validator({"$ref": ref}, registry=registry)
                errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example["value"])]
                assert not errors, f"{method.upper()} {path} example {name}: {errors}"
                checked.append((path, method))
    assert {("/api/v1/notifications", "post"), ("/api/v1/notifications/batch", "post"),
            ("/api/v1/templates", "post"), ("/api/v1/recipients/{external_id}/preferences", "put")} <= set(checked)


# --- the API under gunicorn, as the stack runs it ----------------------------------------------

@pytest.fixture(scope="module")
def api_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """Only the API, under gunicorn as the stack starts it (its static files served by WhiteNoise),
    on the test database; started once liveness answers, before anything asked for the schema."""
    config = StackConfig(env={"DJANGO_SETTINGS_MODULE": "settings.test",
                              "NOTIFY_DB_NAME": settings.DATABASES["default"]["NAME"]},
                         api_port=int(os.environ["NOTIFY_TEST_API_PORT"]) + 3,
                         sandbox_dir=tmp_path_factory.mktemp("sandbox"),
                         log_dir=Path(settings.VAR_DIR) / "test-log" / "test_ops_pages",
                         api_workers=1, api_threads=8, flower_port=None)
    stack = Stack(config)
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def fetch(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_schema_answers_concurrent_first_requests_right_after_start(api_server):
    """drf-spectacular loads its extensions lazily without a lock: concurrent first requests
    in gunicorn's threads answered 500 (notify.api.root.SchemaView serialises them)."""
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda _: fetch(api_server.api_url + "/api/v1/schema?format=json")[0], range(12)))
    assert statuses == [200] * 12


def test_static_files_are_served_under_gunicorn(api_server):
    status, headers, body = fetch(api_server.api_url + "/static/admin/css/base.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and b"body" in body
    status, headers, _ = fetch(api_server.api_url + "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert status == 200 and "javascript" in headers["Content-Type"]
    status, _, page = fetch(api_server.api_url + "/admin/login/")
    assert status == 200 and b"/static/admin/css/base.css" in page


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium (Debian's) with its performance log: every request the page makes."""
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), "chromedriver-ops.log",
                            performance_log=True)
    yield driver
    driver.quit()


def assert_all_local(driver, base: str) -> None:
    """Every request the page sent went to ``base`` (this machine). Chromium's performance log
    decides: the page's own resource timing list also holds what the CSP blocked unsent."""
    urls = requested_urls(driver)
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and resources, "the browser recorded no request"
    # Only network schemes can leave the machine (not data:, blob:, or the browser's chrome://).
    elsewhere = [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:", "ftp:")) and not u.startswith(base + "/")]
    assert not elsewhere, f"requests that left the machine: {elsewhere}"
    assert set(resources) - set(urls) <= BLOCKED_BY_CSP, set(resources) - set(urls)


def wait_for(driver, css: str, timeout: float = 30):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def test_swagger_ui_loads_from_this_service_only(api_server, browser):
    from selenium.webdriver.common.by import By

    requested_urls(browser)  # drop what came before
    browser.get(api_server.api_url + "/api/v1/docs")
    wait_for(browser, ".swagger-ui .opblock")
    title = browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    assert "notify API" in title
    paths = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/v1/notifications", "/health/ready", "/api/v1/"} <= paths, paths
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "api-docs-swagger.png"))
    assert_all_local(browser, api_server.api_url)


def test_redoc_loads_from_this_service_only(api_server, browser):
    from selenium.webdriver.common.by import By

    requested_urls(browser)
    browser.get(api_server.api_url + "/api/v1/redoc")
    wait_for(browser, "[data-section-id^='operation/']")
    assert "notify API" in browser.find_element(By.CSS_SELECTOR, "h1").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']")) >= 10
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "api-docs-redoc.png"))
    assert_all_local(browser, api_server.api_url)


@pytest.mark.django_db(transaction=True)
def test_admin_is_styled_and_titles_deliveries_and_log_rows(api_server, browser, app_key):
    """Log in through the admin under gunicorn; the delivery page has the admin's styles and
    names the delivery and each log row by what it is, not "Delivery object (…)"."""
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    recipient = Recipient.objects.create(app=app_key[0], external_id="user-ops", phone="+821012345678")
    now = timezone.now()
    notification = Notification.objects.create(app=app_key[0], recipient=recipient, request_hash="x", content={},
                                               ttl=60, expires_at=now, response={})
    delivery = Delivery.objects.create(notification=notification, channel=settings.NOTIFY_CHANNELS[0],
                                       status="failed", reason="invalid_token", attempts=1)
    DeliveryLog.objects.create(delivery=delivery, from_status="queued", to_status="sending", attempt=1)
    DeliveryLog.objects.create(delivery=delivery, from_status="sending", to_status="failed", attempt=1,
                               reason="invalid_token", provider_status=400)

    requested_urls(browser)
    browser.delete_all_cookies()
    browser.get(f"{api_server.api_url}/admin/login/?next=/admin/notify/delivery/{delivery.id}/change/")
    browser.find_element(By.ID, "id_username").send_keys("ops")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    click_to_load(browser, "#login-form input[type=submit]")
    wait_for(browser, "#content h2, #content h1")
    # Styled: the admin's stylesheet was served and applied.
    sheets = browser.execute_script(
        "return Array.from(document.styleSheets).filter(s => s.href).map(s => [s.href, s.cssRules.length])")
    assert any(href.endswith("/static/admin/css/base.css") and rules > 0 for href, rules in sheets), sheets
    header = browser.execute_script("return getComputedStyle(document.getElementById('header')).backgroundColor")
    assert header not in ("rgba(0, 0, 0, 0)", "transparent"), header
    page = browser.find_element(By.TAG_NAME, "body").text
    assert str(delivery) in page  # the title and breadcrumbs
    assert "Delivery object" not in page and "DeliveryLog object" not in page
    for row in delivery.log.all():
        assert str(row) in page, str(row)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "admin-delivery.png"))
    assert_all_local(browser, api_server.api_url)


# --- Flower ------------------------------------------------------------------------------------

@pytest.fixture
def flower(empty_queues, tmp_path):
    """Flower alone (no worker runs in this module) on the test vhost, started as the stack does
    (flowerconfig.py: its login and RabbitMQ's management API from the settings)."""
    config = StackConfig(env={"DJANGO_SETTINGS_MODULE": "settings.test", "NOTIFY_FLOWER_BASIC_AUTH": "ops:secret"},
                         api_port=int(os.environ["NOTIFY_TEST_API_PORT"]) + 4, sandbox_dir=tmp_path / "sandbox",
                         log_dir=Path(settings.VAR_DIR) / "test-log" / "test_ops_pages",
                         flower_port=int(os.environ["NOTIFY_TEST_API_PORT"]) + 5)
    stack = Stack(config)
    try:
        stack.start_flower()
        yield stack
    finally:
        stack.stop()


def test_flower_asks_for_its_login_and_shows_each_channel_queue_with_its_depth(flower):
    import base64

    from notify.celery import app
    from notify.queues import queue_name

    backlog = queue_name(settings.NOTIFY_CHANNELS[0])
    with app.connection_for_write() as conn:
        producer = conn.Producer()
        for i in range(3):
            producer.publish({"n": i}, exchange="", routing_key=backlog, delivery_mode=2)
    url = flower.flower_url + "/api/queues/length"
    assert fetch(url)[0] == 401

    def depths() -> dict:
        request = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"ops:secret").decode()})
        with urllib.request.urlopen(request, timeout=10) as response:
            return {q["name"]: q["messages"] for q in json.loads(response.read())["active_queues"]}

    # RabbitMQ's management API refreshes its queue statistics every few seconds.
    deadline = time.monotonic() + 30
    while (seen := depths()).get(backlog) != 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen[backlog] == 3, seen
    for channel in settings.NOTIFY_CHANNELS:
        assert isinstance(seen[queue_name(channel)], int), seen
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(backlog)


def test_flower_does_not_start_without_a_login(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test", "NOTIFY_FLOWER_BASIC_AUTH": ""}
    result = subprocess.run([str(Path(sys.executable).with_name("celery")), "-A", "notify", "flower",
                             f"--port={int(os.environ['NOTIFY_TEST_API_PORT']) + 6}"],
                            cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "NOTIFY_FLOWER_BASIC_AUTH" in result.stdout + result.stderr

"""OAuth2 client credentials (notify.oauth, notify.api.auth.OAuthTokenAuthentication): a client of
an app gets a token at ``POST /oauth/token/`` (HTTP Basic or form), and the token works like one
of the app's API keys, with the scopes it was given that the client still holds: scope checks
(403 ``missing_scope``) and app isolation (404) unchanged. A scope beyond the client's is
``invalid_scope``, a wrong secret ``invalid_client``; an expired or revoked token, or one of a
disabled or deleted client, is 401 ``invalid_token`` from the very next request. API-key
requests never touch the OAuth tables; a token costs one query. The management command, the
admin and the OpenAPI schema make and describe clients."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application
from rest_framework.test import APIClient, APIRequestFactory

from devtools import demo
from notify import maintenance, oauth, scopes
from notify.api.auth import OAuthTokenAuthentication
from notify.models import Notification, OAuthClient

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"
TOKEN_URL = "/oauth/token/"
REVOKE_URL = "/oauth/revoke_token/"
USER = "oauth-user"
SEND_BODY = {"recipient": USER, "template": "order-shipped", "data": {"name": "Ana", "order": "7"}}


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def request_token(client: OAuthClient, secret: str, scope: str | None = None, in_body: bool = False):
    """POST /oauth/token/ (grant_type=client_credentials); the client authenticates by HTTP Basic,
    or with ``in_body`` by client_id and client_secret in the form."""
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope is not None else {})}
    headers = {}
    if in_body:
        data.update(client_id=client.application.client_id, client_secret=secret)
    else:
        headers["HTTP_AUTHORIZATION"] = basic(client.application.client_id, secret)
    return APIClient().post(TOKEN_URL, data, **headers)


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def token_client(app, client_scopes, scope: str | None = None) -> tuple[OAuthClient, str, APIClient]:
    """A new client of ``app`` holding ``client_scopes``, a token (asking ``scope``) and an API
    client sending it."""
    client, secret = oauth.create_client(app, list(client_scopes))
    r = request_token(client, secret, scope)
    assert r.status_code == 200, r.content
    token = r.json()["access_token"]
    return client, token, bearer(token)


def assert_invalid_token(r) -> None:
    assert r.status_code == 401, r.content
    assert r.json()["error"]["code"] == "invalid_token", r.json()
    assert r["WWW-Authenticate"].startswith("Bearer ")


@pytest.fixture
def recipient(api):
    r = api.put(f"{API}/recipients/{USER}", {"phone": "+4915123456789"}, format="json")
    assert r.status_code == 201, r.content


# --- the token, and sending with it ---------------------------------------------------------------

def test_a_client_gets_a_token_with_client_credentials_and_sends_with_it(app_key, recipient):
    client, secret = oauth.create_client(app_key[0], ["send", "recipients"])
    r = request_token(client, secret)
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == settings.NOTIFY_OAUTH_TOKEN_SECONDS == 3600
    assert body["scope"].split() == ["send", "recipients"]  # asking for none gets all the client holds
    assert "refresh_token" not in body
    # Only the token's SHA-256 is stored (RFC 9700), and it expires as the setting says.
    row = AccessToken.objects.get()
    assert row.token == "" and body["access_token"] not in json.dumps(list(AccessToken.objects.values()), default=str)
    assert abs((row.expires - timezone.now()).total_seconds() - 3600) < 60

    api = bearer(body["access_token"])
    sent = api.post(f"{API}/notifications", SEND_BODY, format="json")
    assert sent.status_code == 202, sent.content
    assert api.get(f"{API}/notifications/{sent.json()['id']}").status_code == 200
    assert api.get(f"{API}/recipients/{USER}").status_code == 200
    # The notification is the app's; no API key sent it.
    notification = Notification.objects.get(id=sent.json()["id"])
    assert notification.app_id == app_key[0].id and notification.api_key_id is None


def test_the_client_may_authenticate_in_the_form_body_too(app_key, recipient):
    client, secret = oauth.create_client(app_key[0], ["send"])
    r = request_token(client, secret, "send", in_body=True)
    assert r.status_code == 200, r.content
    assert bearer(r.json()["access_token"]).post(f"{API}/notifications", SEND_BODY, format="json").status_code == 202


def test_a_token_without_send_gets_403_missing_scope(app_key, recipient):
    _, _, api = token_client(app_key[0], ["send", "analytics"], scope="analytics")
    r = api.post(f"{API}/notifications", SEND_BODY, format="json")
    assert r.status_code == 403, r.content
    assert r.json()["error"]["code"] == "missing_scope" and r.json()["error"]["scope"] == "send"
    assert not Notification.objects.exists()
    assert api.get(f"{API}/analytics").status_code == 200


def test_an_admin_client_may_take_a_narrower_token(app_key, recipient):
    _, _, api = token_client(app_key[0], ["admin"], scope="send")
    assert api.post(f"{API}/notifications", SEND_BODY, format="json").status_code == 202
    assert api.get(f"{API}/analytics").json()["error"]["scope"] == "analytics"
    _, _, full = token_client(app_key[0], ["admin"])
    assert full.get(f"{API}/credentials").status_code == 200


@pytest.mark.parametrize("asked", ["send", "analytics send", "admin", "no-such-scope"])
def test_a_scope_beyond_the_clients_is_invalid_scope(app_key, asked):
    client, secret = oauth.create_client(app_key[0], ["analytics"])
    r = request_token(client, secret, asked)
    assert r.status_code == 400, r.content
    assert r.json()["error"] == "invalid_scope"
    assert not AccessToken.objects.exists()


def test_a_wrong_secret_an_unknown_or_disabled_client_is_401_invalid_client(app_key):
    client, secret = oauth.create_client(app_key[0], ["send"])
    for auth in (basic(client.application.client_id, secret[:-1] + ("x" if secret[-1] != "x" else "y")),
                 basic("no-such-client", secret)):
        r = APIClient().post(TOKEN_URL, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=auth)
        assert r.status_code == 401, r.content
        assert r.json()["error"] == "invalid_client"
    client.active = False
    client.save()
    assert request_token(client, secret).json()["error"] == "invalid_client"
    assert not AccessToken.objects.exists()


def test_client_secrets_are_stored_under_the_random_secret_hash_not_the_password_one(app_key, recipient):
    """A random 128-character secret needs no slow hash (notify.hashers): the stored form is
    the one-iteration hash, users' passwords keep Django's default, and the secret still works."""
    from django.contrib.auth.hashers import get_hasher, identify_hasher

    client, secret = oauth.create_client(app_key[0], ["send"])
    stored = client.application.client_secret
    assert secret not in stored
    assert identify_hasher(stored).algorithm == "pbkdf2_sha256_random_secret"
    assert stored.split("$")[1] == "1"
    assert get_hasher("default").algorithm == "pbkdf2_sha256"
    assert request_token(client, secret).status_code == 200


def test_only_the_client_credentials_grant_is_offered(app_key):
    from django.contrib.auth.models import User

    User.objects.create_user("ops", password="pw-for-tests-only")
    client, secret = oauth.create_client(app_key[0], ["send"])
    r = APIClient().post(TOKEN_URL, {"grant_type": "password", "username": "ops", "password": "pw-for-tests-only"},
                         HTTP_AUTHORIZATION=basic(client.application.client_id, secret))
    assert r.status_code in (400, 401) and r.json()["error"] in ("unauthorized_client", "unsupported_grant_type")
    assert not AccessToken.objects.exists()
    # An application made in DOT's own way, with no app, gets no token.
    secret = "s" * 40
    Application.objects.create(name="stray", client_type="confidential", client_secret=secret,
                               authorization_grant_type="client-credentials", client_id="stray-client")
    r = APIClient().post(TOKEN_URL, {"grant_type": "client_credentials"},
                         HTTP_AUTHORIZATION=basic("stray-client", secret))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


# --- a token that is no longer good ---------------------------------------------------------------

def test_an_expired_token_is_401_invalid_token(app_key, recipient):
    _, token, api = token_client(app_key[0], ["send"])
    AccessToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert_invalid_token(api.post(f"{API}/notifications", SEND_BODY, format="json"))
    assert not Notification.objects.exists()


def test_expired_tokens_are_deleted_by_the_maintenance_worker(app_key):
    token_client(app_key[0], ["send"])
    _, _, live = token_client(app_key[0], ["analytics"])
    AccessToken.objects.filter(scope="send").update(expires=timezone.now() - timedelta(seconds=1))
    assert maintenance.forget_expired_tokens() == 1
    assert list(AccessToken.objects.values_list("scope", flat=True)) == ["analytics"]
    assert live.get(f"{API}/analytics").status_code == 200


def test_a_revoked_token_is_refused_on_the_very_next_request(app_key, recipient):
    client, secret = oauth.create_client(app_key[0], ["send"])
    token = request_token(client, secret).json()["access_token"]
    api = bearer(token)
    assert api.post(f"{API}/notifications", SEND_BODY, format="json").status_code == 202
    r = APIClient().post(REVOKE_URL, {"token": token, "token_type_hint": "access_token"},
                         HTTP_AUTHORIZATION=basic(client.application.client_id, secret))
    assert r.status_code == 200, r.content
    assert_invalid_token(api.post(f"{API}/notifications", SEND_BODY, format="json"))


def test_a_client_cannot_revoke_another_apps_token(app_key, recipient):
    _, token, api = token_client(app_key[0], ["send"])
    other, other_secret = oauth.create_client(demo.create_app("oauth-other")[0], ["send"])
    r = APIClient().post(REVOKE_URL, {"token": token}, HTTP_AUTHORIZATION=basic(other.application.client_id,
                                                                                  other_secret))
    assert r.status_code == 200  # RFC 7009 2.2: the answer does not tell whether the token exists
    assert api.post(f"{API}/notifications", SEND_BODY, format="json").status_code == 202


def test_disabling_or_deleting_the_client_refuses_its_tokens_at_once(app_key, recipient):
    client, _, api = token_client(app_key[0], ["send"])
    other, _, other_api = token_client(app_key[0], ["send"])
    OAuthClient.objects.filter(pk=client.pk).update(active=False)  # even without save()
    assert_invalid_token(api.post(f"{API}/notifications", SEND_BODY, format="json"))
    OAuthClient.objects.filter(pk=client.pk).update(active=True)
    client.refresh_from_db()
    client.active = False
    client.save()  # disabling through save() (the admin) revokes its tokens for good
    client.active = True
    client.save()
    assert_invalid_token(api.post(f"{API}/notifications", SEND_BODY, format="json"))

    assert other_api.post(f"{API}/notifications", SEND_BODY, format="json").status_code == 202
    application_id = other.application_id
    other.delete()
    assert_invalid_token(other_api.post(f"{API}/notifications", SEND_BODY, format="json"))
    # Its DOT application and tokens went with it.
    assert not Application.objects.filter(pk=application_id).exists()
    assert not AccessToken.objects.filter(application_id=application_id).exists()


def test_narrowing_the_client_applies_to_its_tokens_next_request(app_key, recipient):
    client, _, api = token_client(app_key[0], ["send", "analytics"])
    assert api.get(f"{API}/analytics").status_code == 200
    client.scopes = ["send"]
    client.save()
    assert api.get(f"{API}/analytics").json()["error"]["scope"] == "analytics"
    assert api.post(f"{API}/notifications", SEND_BODY, format="json").status_code == 202


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer not a token", "Bearer " + "a" * 300,
                                    "Bearer abc\x00def", "bearer unknown-token"])
def test_malformed_or_unknown_tokens_are_401_invalid_token(app_key, header):
    r = APIClient().get(f"{API}/analytics", HTTP_AUTHORIZATION=header)
    assert_invalid_token(r)
    assert r.json()["error"]["message"] and set(r.json()["error"]) >= {"code", "message", "fields"}


def test_an_unknown_keyword_names_both_schemes(app_key):
    r = APIClient().get(f"{API}/analytics", HTTP_AUTHORIZATION="Token abc")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert "Bearer" in r.json()["error"]["message"] and r["WWW-Authenticate"] == "Api-Key"


# --- apps as tenants ------------------------------------------------------------------------------

def test_a_token_of_app_a_cannot_reach_app_b(app_key, recipient, api):
    sent = api.post(f"{API}/notifications", SEND_BODY, format="json")  # app "tests"'s notification
    assert sent.status_code == 202, sent.content
    b_notification = sent.json()["id"]
    other_app = demo.create_app("oauth-a")[0]
    _, _, a = token_client(other_app, ["admin"])
    assert a.get(f"{API}/notifications/{b_notification}").status_code == 404
    assert a.delete(f"{API}/notifications/{b_notification}").status_code == 404
    assert a.get(f"{API}/recipients/{USER}").status_code == 404
    r = a.post(f"{API}/notifications", SEND_BODY, format="json")
    assert r.status_code == 404 and r.json()["error"]["code"] == "recipient_not_found", r.content
    assert Notification.objects.filter(app=other_app).count() == 0
    assert api.get(f"{API}/notifications/{b_notification}").json()["cancelled_at"] is None


# --- cost -----------------------------------------------------------------------------------------

def test_api_key_requests_never_touch_the_oauth_tables(api, recipient):
    api.get(f"{API}/recipients/{USER}")  # the key's row is cached now, as on every busy key
    with CaptureQueriesContext(connection) as queries:
        assert api.get(f"{API}/recipients/{USER}").status_code == 200
        assert APIClient().get(f"{API}/analytics", HTTP_AUTHORIZATION="Api-Key nope").status_code == 401
    assert queries.captured_queries  # the recipient's look-up at least: the capture works
    assert not [q["sql"] for q in queries if re.search(r"oauth2_provider_|notify_oauthclient", q["sql"])]


def test_a_token_is_checked_with_one_query(app_key, django_assert_num_queries):
    _, token, _ = token_client(app_key[0], ["send"])
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
    with django_assert_num_queries(1):
        principal, _ = OAuthTokenAuthentication().authenticate(request)
    assert principal.app_id == app_key[0].id and principal.scopes == {"send"}
    assert principal.key_id.startswith("oauth:") and principal.api_key_id is None
    with django_assert_num_queries(0):
        with pytest.raises(Exception):
            OAuthTokenAuthentication().authenticate(APIRequestFactory().get("/", HTTP_AUTHORIZATION="Bearer a b"))


# --- management, admin, schema --------------------------------------------------------------------

def test_create_oauth_client_prints_the_id_and_secret_once(app_key, recipient):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_oauth_client", "tests", "--scope", "send", "--name", "billing", stdout=out, stderr=err)
    values = dict(line.split("=", 1) for line in out.getvalue().split())
    assert set(values) == {"client_id", "client_secret"}
    client = OAuthClient.objects.get(application__client_id=values["client_id"])
    assert client.app == app_key[0] and client.scopes == ["send"] and client.application.name == "billing"
    assert values["client_secret"] not in client.application.client_secret  # stored hashed
    assert "scopes: send" in err.getvalue()
    r = APIClient().post(TOKEN_URL, {"grant_type": "client_credentials"},
                         HTTP_AUTHORIZATION=basic(values["client_id"], values["client_secret"]))
    assert r.status_code == 200 and r.json()["scope"] == "send"
    with pytest.raises(CommandError):
        call_command("create_oauth_client", "tests", "--scope", "everything", stdout=out, stderr=err)


def test_create_oauth_client_makes_the_app_and_gives_the_default_scopes(db, _fresh_cache):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_oauth_client", "brand-new", stdout=out, stderr=err)
    client = OAuthClient.objects.get()
    assert client.app.name == "brand-new" and client.scopes == scopes.DEFAULT
    assert "created app 'brand-new'" in err.getvalue()


@pytest.fixture
def admin_client(client, app_key):
    from django.contrib.auth.models import User

    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.login(username="ops", password="pw-for-tests-only")
    return client


def test_the_admin_creates_a_client_shows_its_secret_once_and_edits_its_scopes(admin_client, app_key, recipient):
    page = admin_client.get("/admin/notify/oauthclient/add/").content.decode()
    for name in scopes.SCOPES:
        assert f'value="{name}"' in page
    r = admin_client.post("/admin/notify/oauthclient/add/", {"name": "reports", "app": app_key[0].pk,
                                                             "scopes": ["analytics"], "active": "on"}, follow=True)
    assert r.status_code == 200
    shown = " ".join(str(m) for m in r.context["messages"])
    client_id, secret = re.search(r"client id of reports is (\S+) and its secret is (\S+)\. ", shown).groups()
    client = OAuthClient.objects.get(application__client_id=client_id)
    assert client.scopes == ["analytics"] and client.app == app_key[0]
    for url in (f"/admin/notify/oauthclient/{client.pk}/change/", "/admin/notify/oauthclient/"):
        page = admin_client.get(url).content.decode()
        assert client_id in page and secret not in page
    token = request_token(client, secret).json()["access_token"]
    api = bearer(token)
    assert api.get(f"{API}/analytics").status_code == 200

    r = admin_client.post(f"/admin/notify/oauthclient/{client.pk}/change/", {
        "name": "reports", "scopes": ["recipients"], "active": "on"})
    assert r.status_code == 302, r.content.decode()[:2000]
    assert api.get(f"{API}/analytics").json()["error"]["scope"] == "analytics"
    assert api.get(f"{API}/recipients/{USER}").status_code == 403  # the token was issued for analytics only
    r = admin_client.post(f"/admin/notify/oauthclient/{client.pk}/change/", {"name": "reports",
                                                                            "scopes": ["analytics"]})
    assert r.status_code == 302  # unchecked: disabled
    assert_invalid_token(api.get(f"{API}/analytics"))
    # DOT's own application page is gone (an application there would belong to no app); its
    # token list with the revoke action stays.
    assert admin_client.get("/admin/oauth2_provider/application/").status_code == 404
    assert admin_client.get("/admin/oauth2_provider/accesstoken/").status_code == 200


def test_the_schema_declares_the_oauth2_scheme_with_each_operations_scope(api):
    schema = api.get(f"{API}/schema", {"format": "json"}).json()
    scheme = schema["components"]["securitySchemes"]["OAuth2"]
    assert scheme["type"] == "oauth2"
    assert scheme["flows"] == {"clientCredentials": {"tokenUrl": TOKEN_URL, "scopes": scopes.SCOPES}}
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["type"] == "apiKey"
    checked = 0
    for item in schema["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict) or "security" not in operation:
                continue
            keyed = {"ApiKeyAuth": []} in operation["security"]
            oauth2 = [r["OAuth2"] for r in operation["security"] if "OAuth2" in r]
            assert keyed == bool(oauth2), operation["operationId"]
            if keyed:
                scope = operation["responses"]["403"]["content"]["application/json"]["examples"]["missing_scope"][
                    "value"]["error"]["scope"]
                assert oauth2 == [[scope]], operation["operationId"]
                assert "invalid_token" in operation["responses"]["401"]["description"]
                checked += 1
    assert checked > 20

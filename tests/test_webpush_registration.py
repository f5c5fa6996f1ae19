"""Web Push subscriptions are checked whole when a device is registered (POST
/api/v1/recipients/<id>/devices, platform web), by the Web Push adapter's own rules
(channels.webpush.parse_subscription): a p256dh key that is a P-256 point on the curve, a 16-byte
auth secret, and an https endpoint whose host is public, names resolved. Each refusal is a 400
with a machine-readable reason per field and nothing written."""

from __future__ import annotations

import base64
import ipaddress
import socket

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notify.models import Device

from tests.helpers import browser_subscription, db_counts

pytestmark = pytest.mark.django_db(transaction=True)

USER = "web-registration"


def b64(raw: bytes, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(raw).decode()
    return text if pad else text.rstrip("=")


def raw_key(subscription: dict, name: str) -> bytes:
    text = subscription["keys"][name]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def off_curve_point() -> bytes:
    """65 bytes that look like an uncompressed P-256 point (0x04, X, Y) but are not on the curve."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    bad = point[:-1] + bytes([point[-1] ^ 1])
    with pytest.raises(ValueError):  # the premise: cryptography refuses it
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bad)
    return bad


@pytest.fixture
def recipient(api):
    assert api.put(f"/api/v1/recipients/{USER}", {"name": "Web"}, format="json").status_code == 201
    return USER


@pytest.fixture
def resolver(monkeypatch):
    """Names under ``.test`` (RFC 6761: never in the real DNS) answered from a table, the way
    ``socket.getaddrinfo`` answers; every other name goes to the real resolver (Redis, RabbitMQ)."""
    table: dict[str, list[str] | None] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if isinstance(host, str) and host.endswith(".test"):
            if table.get(host) is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            answers = []
            for text in table[host]:
                address = ipaddress.ip_address(text)
                family_ = socket.AF_INET if address.version == 4 else socket.AF_INET6
                sockaddr = (text, port) if address.version == 4 else (text, port, 0, 0)
                answers.append((family_, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
            return answers
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def register(api, subscription):
    return api.post(f"/api/v1/recipients/{USER}/devices", {"platform": "web", "subscription": subscription},
                    format="json")


def assert_refused(api, subscription, reasons: dict[str, list[str]]):
    before = db_counts()
    r = register(api, subscription)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["reasons"] == reasons, error
    assert set(error["fields"]) == set(reasons) and all(error["fields"].values())
    assert db_counts() == before
    return error


def test_a_p256dh_key_of_the_right_length_but_off_the_curve_is_refused(api, recipient):
    subscription = browser_subscription()
    subscription["keys"]["p256dh"] = b64(off_curve_point())
    error = assert_refused(api, subscription, {"subscription.keys.p256dh": ["not_on_curve"]})
    assert "curve" in error["fields"]["subscription.keys.p256dh"][0]


@pytest.mark.parametrize("mangle,reason", [
    (lambda raw: raw[:33], "wrong_length"),  # a compressed point is 33 bytes
    (lambda raw: raw + b"\x00", "wrong_length"),
    (lambda raw: b"\x02" + raw[1:], "not_uncompressed_point"),
], ids=["compressed", "66 bytes", "prefix 0x02"])
def test_a_p256dh_key_that_is_not_a_65_byte_uncompressed_point_is_refused(api, recipient, mangle, reason):
    subscription = browser_subscription()
    subscription["keys"]["p256dh"] = b64(mangle(raw_key(subscription, "p256dh")))
    assert_refused(api, subscription, {"subscription.keys.p256dh": [reason]})


@pytest.mark.parametrize("size", [15, 17, 32])
def test_an_auth_secret_must_be_exactly_16_bytes(api, recipient, size):
    subscription = browser_subscription()
    subscription["keys"]["auth"] = b64(b"a" * size)
    assert_refused(api, subscription, {"subscription.keys.auth": ["wrong_length"]})


@pytest.mark.parametrize("text", ["+/+/+/+/+/+/+/+/+/+/+w", "AAAA AAAA AAAA AAAA AAAAAA", "A", 12345])
def test_keys_must_be_base64url(api, recipient, text):
    subscription = browser_subscription()
    subscription["keys"]["auth"] = text
    assert_refused(api, subscription, {"subscription.keys.auth": ["not_base64url"]})


def test_missing_parts_are_named(api, recipient):
    assert_refused(api, {"keys": {"auth": browser_subscription()["keys"]["auth"]}},
                   {"subscription.endpoint": ["required"], "subscription.keys.p256dh": ["required"]})
    assert_refused(api, {"endpoint": "https://push.example.net/wp/1"}, {"subscription.keys": ["required"]})
    assert_refused(api, ["https://push.example.net/wp/1"], {"subscription": ["not_a_subscription"]})


def test_every_bad_part_is_reported_at_once(api, recipient):
    subscription = browser_subscription("http://push.example.net/wp/1")
    subscription["keys"] = {"p256dh": b64(off_curve_point()), "auth": b64(b"x" * 8)}
    assert_refused(api, subscription, {"subscription.endpoint": ["not_https_url"],
                                       "subscription.keys.p256dh": ["not_on_curve"],
                                       "subscription.keys.auth": ["wrong_length"]})


def test_keys_with_or_without_padding_are_accepted_and_stored_as_given(api, recipient):
    subscription = browser_subscription("https://push.example.net/wp/padded")
    subscription["keys"] = {name: b64(raw_key(subscription, name), pad=True) for name in ("p256dh", "auth")}
    assert subscription["keys"]["p256dh"].endswith("=") and subscription["keys"]["auth"].endswith("==")
    r = register(api, {**subscription, "expirationTime": None})
    assert r.status_code == 201, r.content
    assert Device.objects.get(id=r.json()["id"]).subscription == subscription


@pytest.mark.parametrize("endpoint", ["https://[fe80::1]/wp/1", "https://[fc00::1]/wp/1", "https://[::]/wp/1",
                                      "https://[ff02::1]/wp/1", "https://224.0.0.251/wp/1", "https://0.0.0.0/wp/1",
                                      "https://240.0.0.1/wp/1", "https://100.64.0.1/wp/1",
                                      "https://[::ffff:10.0.0.1]/wp/1", "https://[2002:a00:1::1]/wp/1",
                                      "https://app.localhost/wp/1"])
def test_an_endpoint_on_a_non_public_address_is_refused_with_its_reason(api, recipient, endpoint):
    assert_refused(api, browser_subscription(endpoint), {"subscription.endpoint": ["private_address"]})


@pytest.mark.parametrize("addresses", [["10.0.0.8"], ["127.0.0.1"], ["169.254.169.254"], ["::1"], ["fd00::5"],
                                       ["239.255.255.250"], ["93.184.215.14", "192.168.1.10"],
                                       ["2606:4700::1111", "::ffff:127.0.0.1"]])
def test_a_name_that_resolves_to_a_non_public_address_is_refused(api, recipient, resolver, addresses):
    resolver["push.inward.test"] = addresses
    error = assert_refused(api, browser_subscription("https://push.inward.test/wp/1"),
                           {"subscription.endpoint": ["private_address"]})
    assert "push.inward.test resolves to" in error["fields"]["subscription.endpoint"][0]


def test_a_name_that_resolves_only_to_public_addresses_is_accepted(api, recipient, resolver):
    resolver["push.public.test"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert register(api, browser_subscription("https://push.public.test/wp/1")).status_code == 201


def test_a_name_that_does_not_resolve_now_is_accepted(api, recipient, resolver):
    # It reaches nothing now; a send to it fails as a transport error (documented policy).
    assert register(api, browser_subscription("https://push.nowhere.test/wp/1")).status_code == 201


def test_an_allowed_private_push_service_is_accepted_even_by_a_name_resolving_inward(api, recipient, resolver,
                                                                                      settings):
    # NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS=push.corp.test:8443, as the settings read it.
    settings.NOTIFY_PROVIDER_ENV = {**settings.NOTIFY_PROVIDER_ENV,
                                    "webpush": {**settings.NOTIFY_PROVIDER_ENV["webpush"],
                                                "private_endpoints": "push.corp.test:8443"}}
    resolver["push.corp.test"] = ["10.0.0.8"]
    assert register(api, browser_subscription("https://push.corp.test:8443/wp/1")).status_code == 201
    # Only that host and port.
    assert_refused(api, browser_subscription("https://push.corp.test:9443/wp/1"),
                   {"subscription.endpoint": ["private_address"]})


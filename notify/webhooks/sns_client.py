"""The two HTTPS calls the service makes to Amazon SNS: fetching a signing certificate and
confirming a subscription.

Both go only to URLs :func:`notify.webhooks.sns_message.check_url` accepted, verify the host's
TLS certificate against ``NOTIFY_SNS_CA_FILE`` (the system's CAs when unset), follow no
redirect and give up after :data:`TIMEOUT` seconds. A signing certificate is kept once fetched
(AWS documentation, "Verifying the signatures of Amazon SNS messages": the certificate only
changes when SNS rotates it, under a new URL): in this process and, as its PEM bytes keyed by
the URL, in Redis for :data:`CERT_TTL` seconds, so the API's other processes fetch it no more.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading

import httpx
from cryptography import x509
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django_redis import get_redis_connection

from ..cache import redis_key

#: Seconds for connecting to SNS and for its answer (SNS waits 15 s for ours).
TIMEOUT = 5.0
#: Seconds a fetched certificate stays in Redis.
CERT_TTL = 24 * 3600
#: Certificates kept in this process (SNS signs with a handful at a time).
MAX_KEPT = 32

_kept: dict[str, x509.Certificate] = {}
_lock = threading.Lock()
_context: tuple[str, ssl.SSLContext] | None = None


class Unavailable(Exception):
    """SNS could not be reached or answered with something else than asked for (a transient
    failure: the caller answers 5xx so SNS delivers the message again)."""


def _ssl_context() -> ssl.SSLContext:
    """A verifying client context trusting ``NOTIFY_SNS_CA_FILE`` (or the system's CAs), made
    once per process and again when the setting changes."""
    global _context
    ca_file = settings.NOTIFY_SNS_CA_FILE
    if ca_file and not os.path.isfile(ca_file):
        raise ImproperlyConfigured(f"NOTIFY_SNS_CA_FILE {ca_file!r} does not exist")
    if _context is None or _context[0] != ca_file:
        _context = (ca_file, ssl.create_default_context(cafile=ca_file or None))
    return _context[1]


def _get(url: str) -> httpx.Response:
    try:
        return httpx.get(url, verify=_ssl_context(), timeout=TIMEOUT, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc


def signing_certificate(url: str) -> x509.Certificate:
    """The X.509 certificate at ``url`` (a checked ``SigningCertURL``).

    Raises:
        Unavailable: not kept, and the fetch failed, answered other than 200, or was no PEM
            certificate.
    """
    with _lock:
        known = _kept.get(url)
    if known is not None:
        return known
    redis = get_redis_connection("default")
    key = redis_key("sns-cert", hashlib.sha256(url.encode()).hexdigest())
    pem = redis.get(key)
    fetched = pem is None
    if fetched:
        response = _get(url)
        if response.status_code != 200:
            raise Unavailable(f"the signing certificate answered {response.status_code}")
        pem = response.content
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise Unavailable("the signing certificate URL gave no PEM certificate") from exc
    if fetched:
        redis.set(key, pem, ex=CERT_TTL)
    with _lock:
        if len(_kept) >= MAX_KEPT:
            _kept.clear()
        _kept[url] = certificate
    return certificate


def confirm_subscription(url: str) -> None:
    """GET a checked ``SubscribeURL``, which confirms the subscription ("Confirm the
    subscription", Amazon SNS Developer Guide).

    Raises:
        Unavailable: the call failed or answered other than 200.
    """
    response = _get(url)
    if response.status_code != 200:
        raise Unavailable(f"SubscribeURL answered {response.status_code}")

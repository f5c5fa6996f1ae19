"""Helpers shared by the adapters: config reading, TLS, sessions, HTTP answers → :class:`Result`.

Everything a provider module would otherwise repeat lives here once:

* :func:`config_timeout`, :func:`ca_file`, :func:`ssl_context`, :func:`retryless_session`: how
  a long-lived client is built from the settings mapping (timeouts, the CA bundle that lets the
  local sandbox's certificates verify, connection pools that never retry by themselves).
* :func:`parse_retry_after`: ``Retry-After`` as delta-seconds or HTTP-date (RFC 9110 §10.2.3).
* :func:`http_result`: the one mapping from an HTTP status (plus the provider's reason code) to
  an :class:`~channels.base.Outcome`, used by every adapter whose provider answers over HTTP.
* :func:`json_bytes`: the exact UTF-8 bytes sent, so size limits are checked on the wire body.
* :class:`Http2Client`: one HTTP/2 connection per provider and process, on which the sends of
  every thread are concurrent streams.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import ssl
import threading
import time
from typing import Any, Collection, Mapping

import httpx
import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from .base import Outcome, Result
from .errors import ChannelConfigurationError

#: Seconds for connect and read when the config has no ``timeout``.
DEFAULT_TIMEOUT = 10.0
#: Connections kept per provider host by one worker process (requests / botocore pools).
DEFAULT_POOL_SIZE = 10


def config_timeout(config: Mapping[str, Any], default: float = DEFAULT_TIMEOUT) -> float:
    """Return ``config["timeout"]`` as seconds (float > 0), or ``default`` when unset.

    Raises:
        ChannelConfigurationError: the value is not a positive number.
    """
    value = config.get("timeout")
    if value in (None, ""):
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ChannelConfigurationError(f"timeout must be a number of seconds, got {value!r}")
    if seconds <= 0:
        raise ChannelConfigurationError(f"timeout must be > 0, got {value!r}")
    return seconds


def ca_file(config: Mapping[str, Any]) -> str | None:
    """Return the configured CA bundle path (``ca_file``), or None for the system default.

    Raises:
        ChannelConfigurationError: the path is set but is not a file.
    """
    path = config.get("ca_file") or None
    if path is not None and not os.path.isfile(path):
        raise ChannelConfigurationError(f"ca_file {path!r} does not exist")
    return path


def verify_setting(config: Mapping[str, Any]) -> str | bool:
    """The ``verify`` value for requests: the CA bundle path, or True (system/certifi CAs)."""
    return ca_file(config) or True


def ssl_context(config: Mapping[str, Any]) -> ssl.SSLContext:
    """A verifying client SSLContext trusting ``ca_file`` (or the system CAs when unset).

    httpx 0.28 deprecates ``verify=<path>``; an SSLContext is its supported form.
    """
    return ssl.create_default_context(cafile=ca_file(config))


def retryless_session(config: Mapping[str, Any], session: requests.Session | None = None,
                      pool_size: int = DEFAULT_POOL_SIZE) -> requests.Session:
    """Prepare a requests session for one provider: no retries, a pool, ``ca_file`` trust.

    ``HTTPAdapter(max_retries=0)`` makes urllib3 give up after the first attempt, so Celery stays
    the only retry layer. requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` override
    ``session.verify`` while ``trust_env`` is on, so with an explicit ``ca_file`` the environment
    is not consulted (the configured CA wins; proxies then come from configuration only).

    Args:
        config: the channel config (``ca_file``).
        session: an existing session to configure in place (e.g. a client library's own); a
            new ``requests.Session`` when None.
        pool_size: connections kept per host.
    """
    session = session if session is not None else requests.Session()
    adapter = HTTPAdapter(max_retries=0, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = verify_setting(config)
    if ca_file(config):
        session.trust_env = False
    return session


def requests_unsent(exc: BaseException) -> bool:
    """True when a requests exception was raised before the request was sent.

    requests reports both "could not connect" and "connection dropped after sending" as
    ``ConnectionError``; the wrapped urllib3 error tells them apart (``NewConnectionError``,
    connect timeout or TLS handshake failure → never sent).
    """
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        return isinstance(reason, (urllib3.exceptions.NewConnectionError,
                                   urllib3.exceptions.ConnectTimeoutError,
                                   urllib3.exceptions.SSLError))
    return False


class RequestsTransport:
    """Mixin for adapters whose client library sends through ``requests``: which exceptions
    are transport errors / timeouts, and which prove the request never left."""

    transport_errors: tuple[type[BaseException], ...] = (requests.RequestException,)
    timeout_errors: tuple[type[BaseException], ...] = (requests.Timeout,)

    def request_unsent(self, exc: BaseException) -> bool:
        """See :func:`requests_unsent`."""
        return requests_unsent(exc)


class Http2Client:
    """An :class:`httpx.AsyncClient` speaking HTTP/2, used from any number of threads.

    The sends of a worker process's threads become concurrent streams on one kept-open TLS
    connection (RFC 9113 §5; a second connection opens only past the server's
    ``SETTINGS_MAX_CONCURRENT_STREAMS``). httpx's sync client is not thread-safe with HTTP/2
    (encode/httpx#3324), so the async client runs on an event loop of its own daemon thread,
    started by the first request (an adapter built only to check settings starts none, and a
    prefork worker builds its adapters after the fork); a calling thread waits for its answer.

    Args:
        config: the adapter's settings (``ca_file``, ``timeout``).
        name: the loop thread's name (seen in thread dumps).
        http1: also offer HTTP/1.1 in ALPN (False for a provider that speaks HTTP/2 only).
        max_connections: connections kept at most; each carries many streams over HTTP/2.
        **client: more :class:`httpx.AsyncClient` arguments (``base_url``, ``auth``, ...).
    """

    #: What :meth:`request` raises when no answer came: all of them, the timeouts, and those
    #: raised before the request left this host (a resend then cannot duplicate anything).
    transport_errors: tuple[type[BaseException], ...] = (httpx.TransportError,)
    timeout_errors: tuple[type[BaseException], ...] = (httpx.TimeoutException,)
    unsent_errors: tuple[type[BaseException], ...] = (httpx.ConnectError, httpx.ConnectTimeout,
                                                      httpx.PoolTimeout)

    def __init__(self, config: Mapping[str, Any], name: str, http1: bool = True,
                 max_connections: int = 4, **client: Any):
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.client = httpx.AsyncClient(
            http1=http1, http2=True, verify=ssl_context(config),
            timeout=httpx.Timeout(config_timeout(config)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            **client)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=self.name, daemon=True).start()
                self._loop = loop
            return self._loop

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request (a new stream on the shared connection), made on the client's loop while
        this thread waits. Any status returns; httpx's errors (see ``transport_errors``) raise."""
        return asyncio.run_coroutine_threadsafe(self.client.request(method, url, **kwargs),
                                                self._running_loop()).result()

    def close(self) -> None:
        """Close the connections and stop the loop's thread; the client is not used again."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.client.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)


def parse_retry_after(value: Any, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value.

    Accepts delta-seconds (``"120"``, also fractional) or an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). Returns None when absent or unparsable; never
    negative (a date in the past gives 0.0).
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def header(headers: Mapping[str, Any] | None, name: str) -> Any:
    """Case-insensitive header lookup on any mapping (requests/httpx/botocore headers)."""
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def is_retryable_status(status: int) -> bool:
    """True for answers that mean "try again later": 408, 429 and every 5xx."""
    return status in (408, 429) or status >= 500


#: Answers that can come after the provider acted on the request (an internal error, or a gateway
#: that lost the answer); 429 and 503 say the request was refused before processing.
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})


def http_result(status: int, *, headers: Mapping[str, Any] | None = None,
                reason: str | None = None, provider_message_id: str | None = None,
                dead_token: bool = False, refused: bool = False,
                retry_reasons: Collection[str] = (),
                raw: Mapping[str, Any] | None = None) -> Result:
    """Map one provider answer to a :class:`Result` with the rules every provider shares.

    Order: 2xx → SENT; ``dead_token`` → DEAD_TOKEN (the adapter decides, from status and
    reason, that the address is gone); ``reason in retry_reasons`` or 408/429/5xx → RETRY with
    ``retry_after`` from the ``Retry-After`` header, and ``maybe_delivered`` True for
    :data:`AMBIGUOUS_STATUSES` (the same flag transport errors carry); ``refused`` →
    RECIPIENT_REFUSED (checked after the retry rules); any other status → FAILED.

    Args:
        status: the HTTP status code.
        headers: the response headers (for ``Retry-After``).
        reason: the provider's reason code, kept on the Result.
        provider_message_id: the provider's id for an accepted message.
        dead_token: True when the adapter recognised a dead-address answer.
        refused: True when the adapter recognised the recipient refusing the channel (an
            opt-out answer such as Twilio's 21610).
        retry_reasons: provider reason codes that are transient although their status is a 4xx
            (e.g. APNs ``ExpiredProviderToken``, SES ``SendingPausedException``).
        raw: what to keep for the delivery attempt log.
    """
    raw = dict(raw or {})
    if 200 <= status < 300:
        return Result(Outcome.SENT, provider_message_id=provider_message_id, reason=reason,
                      status=status, raw=raw)
    if dead_token:
        return Result(Outcome.DEAD_TOKEN, reason=reason, status=status, raw=raw)
    if (reason is not None and reason in retry_reasons) or is_retryable_status(status):
        return Result(Outcome.RETRY, reason=reason, status=status, raw=raw,
                      maybe_delivered=status in AMBIGUOUS_STATUSES,
                      retry_after=parse_retry_after(header(headers, "Retry-After")))
    if refused:
        return Result(Outcome.RECIPIENT_REFUSED, reason=reason, status=status, raw=raw)
    return Result(Outcome.FAILED, reason=reason, status=status, raw=raw)


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON (non-ASCII kept as UTF-8, not ``\\u`` escapes): the bytes on the wire."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def response_json(text: str | bytes | None) -> Any:
    """Parse a response body as JSON; the raw text (or None) when it is not JSON."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text if isinstance(text, str) else text.decode("utf-8", "replace")

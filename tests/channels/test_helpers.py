"""Pure helpers of the channel layer: no network, no sandbox."""

from __future__ import annotations

import email.utils
import time

import pytest

from channels.base import Outcome
from channels.errors import ChannelConfigurationError
from channels.http import config_timeout, http_result, parse_retry_after
from channels.sms_segments import segments
from channels.twilio_sms import with_query
from channels.webpush import topic_for


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("120", 120.0), ("1.5", 1.5), ("-3", 0.0), ("soon", None), (7, 7.0),
])
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    now = time.time()
    value = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(value, now=now) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("status, kwargs, outcome", [
    (200, {}, Outcome.SENT),
    (201, {}, Outcome.SENT),
    (410, {"dead_token": True}, Outcome.DEAD_TOKEN),
    (429, {}, Outcome.RETRY),
    (408, {}, Outcome.RETRY),
    (503, {}, Outcome.RETRY),
    (403, {"reason": "ExpiredProviderToken", "retry_reasons": {"ExpiredProviderToken"}},
     Outcome.RETRY),
    (400, {"reason": "BadCollapseId"}, Outcome.FAILED),
    (413, {}, Outcome.FAILED),
])
def test_http_result(status, kwargs, outcome):
    result = http_result(status, headers={"retry-after": "4"}, **kwargs)
    assert result.outcome is outcome
    assert result.status == status
    assert result.retry_after == (4.0 if outcome is Outcome.RETRY else None)


def test_config_timeout():
    assert config_timeout({}) == 10.0
    assert config_timeout({"timeout": "2.5"}) == 2.5
    with pytest.raises(ChannelConfigurationError):
        config_timeout({"timeout": 0})
    with pytest.raises(ChannelConfigurationError):
        config_timeout({"timeout": "fast"})


@pytest.mark.parametrize("body, expected", [
    ("", (0, "GSM-7")),
    ("a" * 160, (1, "GSM-7")),
    ("a" * 161, (2, "GSM-7")),
    ("a" * 306, (2, "GSM-7")),
    ("a" * 307, (3, "GSM-7")),
    ("€" * 80, (1, "GSM-7")),           # extension chars count 2: 160 septets
    ("€" * 81, (2, "GSM-7")),
    ("a" * 152 + "€" + "a" * 10, (2, "GSM-7")),   # 152 + 2 + 10 = 164 septets
    ("a" * 152 + "€" + "a" * 152, (3, "GSM-7")),  # the escape pair is not split
    ("안" * 70, (1, "UCS-2")),
    ("안" * 71, (2, "UCS-2")),
    ("😀" * 35, (1, "UCS-2")),          # 70 UTF-16 units
    ("😀" * 36, (2, "UCS-2")),
    ("a" * 66 + "😀" + "a", (1, "UCS-2")),  # 69 units: 1 segment
    ("a" * 66 + "😀" * 3, (2, "UCS-2")),    # 72 units: surrogate pair not split
    ("Héllo ñ Ç", (1, "GSM-7")),
    ("curly ’ quote", (1, "UCS-2")),
])
def test_segments(body, expected):
    assert segments(body) == expected


def test_topic_for():
    assert topic_for("6f1c2a52-5e0b-4c3e-9d3e-0a1b2c3d4e5f") == "6f1c2a525e0b4c3e9d3e0a1b2c3d4e5f"
    assert topic_for("news-daily_1") == "news-daily_1"
    long = topic_for("a key with spaces and Hangul 한글 that is long")
    assert len(long) == 32 and all(c.isalnum() or c in "-_" for c in long)
    assert long == topic_for("a key with spaces and Hangul 한글 that is long")


def test_with_query():
    assert with_query("https://h/cb?a=1&delivery_id=old", delivery_id="x") == \
        "https://h/cb?a=1&delivery_id=x"


def test_requests_unsent_tells_refused_from_dropped_after_send():
    """A refused connection never sent anything; a connection the server drops after reading
    the request may have been acted on (the unknown-outcome case)."""
    import socket
    import threading

    import requests

    from channels.http import requests_unsent, retryless_session

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def read_then_hang_up():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=read_then_hang_up, daemon=True)
    thread.start()
    session = retryless_session({})
    with pytest.raises(requests.ConnectionError) as dropped:
        session.post(f"http://127.0.0.1:{port}/x", data=b"hello", timeout=5)
    thread.join(5)
    server.close()
    assert requests_unsent(dropped.value) is False

    with pytest.raises(requests.ConnectionError) as refused:
        session.post(f"http://127.0.0.1:{port}/x", data=b"hello", timeout=5)
    assert requests_unsent(refused.value) is True


@pytest.mark.parametrize("status, maybe", [(500, True), (502, True), (504, True), (503, False), (429, False)])
def test_http_result_marks_answers_that_may_follow_a_delivery(status, maybe):
    # 500/502/504 can come after the provider acted; SMS and email must not resend on them.
    assert http_result(status).maybe_delivered is maybe

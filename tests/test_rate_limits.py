"""Per-recipient rate limits (notify.ratelimit): counted at the moment of sending over moving
windows in the real Redis, by the workers of a running stack, from several processes at once.
The in-process send stage's cases (circuit breaker hand-backs, provider retries, two devices)
are in tests/stages/test_send_rate_limits.py."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.cache import cache

from channels import registry
from devtools import demo
from notify import policy, ratelimit
from notify.models import FINAL_STATUSES, REACHED_PROVIDER, Category, Delivery
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
PUSH = registry.channels_in_group("push")
SMS = registry.channels_in_group("sms")[0]
#: The channel and provider of the stack tests' recipients, who each have one iOS device.
IOS = registry.device_platforms()["ios"]
IOS_PROVIDER = registry.providers_of(IOS)[0]
FINAL = FINAL_STATUSES | {"scheduled"}


# -- which limits apply --------------------------------------------------------------------------
def test_a_channels_own_entry_wins_over_its_group_over_every_channel_over_the_setting(settings):
    settings.NOTIFY_RATE_LIMIT = "7/day"
    first, second = PUSH[0], PUSH[1]
    rules = policy.Rules("news", rate_limits={first: "1/minute", "push": "3/hour;10/day", "*": "20/day"})
    assert ratelimit.limits_for(rules, first) == ratelimit.parse_limits("1/minute")
    assert ratelimit.limits_for(rules, second) == ratelimit.parse_limits("3/hour;10/day")
    assert ratelimit.limits_for(rules, SMS) == ratelimit.parse_limits("20/day")
    assert ratelimit.limits_for(policy.Rules("other"), SMS) == ratelimit.parse_limits("7/day")
    assert ratelimit.limits_for(policy.Rules("news", rate_limits={"push": "3/hour"}), SMS) == \
        ratelimit.parse_limits("7/day")


def test_none_means_no_limit_for_a_channel_and_for_the_deployment(settings):
    rules = policy.Rules("news", rate_limits={SMS: "none", "*": "1/hour"})
    assert ratelimit.limits_for(rules, SMS) == ()
    settings.NOTIFY_RATE_LIMIT = "none"
    assert ratelimit.limits_for(policy.Rules("other"), SMS) == ()


def test_rate_limits_are_checked_before_a_category_is_written():
    assert ratelimit.validate_rate_limits({"push": "3/hour;10/day", SMS: "1/day", "*": "none"})
    for value, message in [
        ({"pigeon": "1/hour"}, "pigeon: not a channel, a content group or '*': one of apns, fcm, webpush, sms, "
                               "email, push, *"),
        ({"push": "3/h"}, "push: '3/h' is not a rate limit"),
        ({"push": "0/hour"}, "push: '0/hour': a rate limit allows at least 1 per window"),
        ({"push": 3}, "push: a rate limit is a string"),
        (["3/hour"], "rate_limits must be an object"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*")):
            ratelimit.validate_rate_limits(value)


def _load_settings(**env: str) -> subprocess.CompletedProcess:
    code = "import django; django.setup(); from django.conf import settings; print(settings.NOTIFY_RATE_LIMIT)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test", **env})


def test_a_bad_deployment_default_stops_the_start_and_names_the_variable():
    done = _load_settings(NOTIFY_RATE_LIMIT="100/h")
    assert done.returncode != 0
    assert "ImproperlyConfigured: NOTIFY_RATE_LIMIT: '100/h' is not a rate limit" in done.stderr
    assert _load_settings(NOTIFY_RATE_LIMIT="none").stdout.strip() == "none"
    assert _load_settings(NOTIFY_RATE_LIMIT="3/hour;10/day").stdout.strip() == "3/hour;10/day"


# -- counting in Redis ---------------------------------------------------------------------------
def _claim(notification_id=None, attempt: int = 1, recipient_id: int = 1, channel: str = PUSH[0]):
    """What notify.ratelimit.at_send reads of a claimed delivery (notify.send.Claim)."""
    return SimpleNamespace(notification_id=notification_id or uuid.uuid4(), attempt=attempt, app_id=1,
                           recipient_id=recipient_id, channel=channel, category="news", channel_deliveries=1,
                           prior_reason="")


@pytest.fixture
def fresh_redis():
    cache.clear()


def test_a_refusal_by_a_longer_window_leaves_the_shorter_one_untouched(fresh_redis):
    rules = policy.Rules("news", rate_limits={"*": "5/minute;2/hour"})
    now = dt.datetime.now(dt.timezone.utc)
    decisions = [ratelimit.at_send(_claim(), rules, now).action for _ in range(3)]
    assert decisions == [policy.SEND, policy.SEND, policy.SUPPRESS]
    minute, hour = ratelimit.parse_limits("5/minute;2/hour")
    identity = (1, 1, PUSH[0], "news")
    assert ratelimit.limiter().get_window_stats(minute, *identity).remaining == 3
    assert ratelimit.limiter().get_window_stats(hour, *identity).remaining == 0


def test_over_the_limit_a_deferring_category_waits_until_the_window_has_room(fresh_redis):
    rules = policy.Rules("digest", rate_limits={"*": "2/minute"}, over_limit="defer")
    first_hit = time.time()
    now = dt.datetime.now(dt.timezone.utc)
    assert [ratelimit.at_send(_claim(), rules, now).action for _ in range(2)] == [policy.SEND, policy.SEND]
    decision = ratelimit.at_send(_claim(), rules, now)
    assert (decision.action, decision.reason) == (policy.DEFER, "rate_limited")
    assert first_hit + 60 < decision.until.timestamp() <= first_hit + 62


def test_limits_count_per_recipient_channel_and_category(fresh_redis):
    rules = policy.Rules("news", rate_limits={"*": "1/hour"})
    now = dt.datetime.now(dt.timezone.utc)
    assert ratelimit.at_send(_claim(), rules, now) == policy.GO
    assert ratelimit.at_send(_claim(), rules, now).action == policy.SUPPRESS
    assert ratelimit.at_send(_claim(recipient_id=2), rules, now) == policy.GO
    assert ratelimit.at_send(_claim(channel=SMS), rules, now) == policy.GO
    other = SimpleNamespace(**{**vars(_claim()), "category": "orders"})
    assert ratelimit.at_send(other, rules, now) == policy.GO


def _take_in_process(barrier, results, rules, count: int) -> None:
    """One OS process: wait for the others, then ask for ``count`` sends to the same recipient."""
    barrier.wait()
    now = dt.datetime.now(dt.timezone.utc)
    results.put(sum(ratelimit.at_send(_claim(), rules, now) == policy.GO for _ in range(count)))


def test_200_sends_from_8_processes_at_once_let_exactly_the_limit_through(fresh_redis):
    rules = policy.Rules("news", rate_limits={"push": "7/hour"})
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(8), context.Queue()
    processes = [context.Process(target=_take_in_process, args=(barrier, results, rules, 25)) for _ in range(8)]
    for process in processes:
        process.start()
    allowed = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert sum(allowed) == 7, allowed


# -- the running stack ----------------------------------------------------------------------------
@pytest.fixture
def key(stack, transactional_db):
    cache.clear()  # no counts left from an earlier run in this Redis database
    return demo.create_app("ratelimits")


def _recipient(stack, api_key: str) -> str:
    user = f"rl-{secrets.token_hex(4)}"
    assert demo.call(stack.api_url, api_key, "PUT", f"/api/v1/recipients/{user}", {})[0] in (200, 201)
    status, body = demo.call(stack.api_url, api_key, "POST", f"/api/v1/recipients/{user}/devices",
                             {"platform": "ios", "token": secrets.token_hex(32)})
    assert status == 201, body
    return user


def _push(stack, api_key: str, user: str, category: str) -> str:
    status, body = demo.call(stack.api_url, api_key, "POST", "/api/v1/notifications",
                             {"recipient": user, "category": category, "content": {"push": {"title": "t"}}})
    assert status == 202, body
    (delivery,) = body["deliveries"]
    assert delivery["status"] == "queued", delivery  # nothing is counted when a send is accepted
    return delivery["id"]


def _finished(ids: list[str], timeout: float = 60) -> list[Delivery]:
    def done():
        rows = list(Delivery.objects.filter(id__in=ids))
        return rows if len(rows) == len(ids) and all(r.status in FINAL for r in rows) else None

    return wait_until(done, timeout=timeout, message=f"{len(ids)} deliveries to finish")


@pytest.mark.stack
def test_the_push_after_the_limit_is_suppressed(stack, key, control):
    app, api_key = key
    Category.objects.create(app=app, name="news", rate_limits={"push": "3/hour"})
    user = _recipient(stack, api_key)
    first = [_push(stack, api_key, user, "news") for _ in range(3)]
    assert {d.status for d in _finished(first)} <= REACHED_PROVIDER
    (fourth,) = _finished([_push(stack, api_key, user, "news")])
    assert (fourth.status, fourth.reason) == ("suppressed", "rate_limited")
    assert not control.records(IOS_PROVIDER, delivery_id=str(fourth.id))


@pytest.mark.stack
def test_over_the_limit_a_deferring_category_is_scheduled_for_when_the_window_allows(stack, key, control):
    app, api_key = key
    # The channel's own entry wins over its group's.
    Category.objects.create(app=app, name="digest", rate_limits={IOS: "2/hour", "push": "50/hour"},
                            over_limit="defer")
    user = _recipient(stack, api_key)
    before = time.time()
    first = [_push(stack, api_key, user, "digest") for _ in range(2)]
    assert {d.status for d in _finished(first)} <= REACHED_PROVIDER
    (third,) = _finished([_push(stack, api_key, user, "digest")])
    assert (third.status, third.reason, third.attempts) == ("scheduled", "rate_limited", 0)
    first_sent = min(d.sent_at for d in Delivery.objects.filter(id__in=first)).timestamp()
    assert before + 3600 < third.next_attempt_at.timestamp() < first_sent + 3600 + 3
    assert not control.records(IOS_PROVIDER, delivery_id=str(third.id))


@pytest.mark.stack
def test_a_required_category_is_never_rate_limited(stack, key, control):
    app, api_key = key
    Category.objects.create(app=app, name="security", required=True, rate_limits={"*": "1/hour"})
    Category.objects.create(app=app, name="alerts", rate_limits={"*": "1/hour"})
    user = _recipient(stack, api_key)
    sent = _finished([_push(stack, api_key, user, "security") for _ in range(3)])
    assert {d.status for d in sent} <= REACHED_PROVIDER
    limited = [_finished([_push(stack, api_key, user, "alerts")])[0] for _ in range(2)]
    assert [(d.status, d.reason) for d in limited] == [("sent", ""), ("suppressed", "rate_limited")]


@pytest.mark.stack
def test_a_refused_batch_uses_up_nothing(stack, key, control):
    app, api_key = key
    Category.objects.create(app=app, name="news", rate_limits={"push": "2/hour"})
    user = _recipient(stack, api_key)
    item = {"recipient": user, "category": "news", "content": {"push": {"title": "t"}}}
    status, body = demo.call(stack.api_url, api_key, "POST", "/api/v1/notifications/batch",
                             {"notifications": [item, item, {**item, "recipient": "nobody"}]})
    assert (status, body["error"]["code"]) == (400, "batch_rejected"), body
    sent = _finished([_push(stack, api_key, user, "news") for _ in range(2)])
    assert {d.status for d in sent} <= REACHED_PROVIDER
    (third,) = _finished([_push(stack, api_key, user, "news")])
    assert (third.status, third.reason) == ("suppressed", "rate_limited")


@pytest.mark.stack
def test_200_concurrent_sends_to_one_recipient_let_exactly_the_limit_through(stack, key, control):
    """Two API processes accept and two worker processes (prefork) count at once."""
    assert stack.config.concurrency > 1 and stack.config.worker_pool == "prefork"
    app, api_key = key
    Category.objects.create(app=app, name="news", rate_limits={"push": "5/hour"})
    user = _recipient(stack, api_key)
    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(lambda _: _push(stack, api_key, user, "news"), range(200)))
    rows = _finished(ids, timeout=120)
    assert Counter((r.status, r.reason) for r in rows) == {("sent", ""): 5, ("suppressed", "rate_limited"): 195}
    sent = [str(r.id) for r in rows if r.status in REACHED_PROVIDER]
    assert sum(len(control.records(IOS_PROVIDER, delivery_id=d)) for d in sent) == 5

"""Analytics (notify.analytics, GET /api/v1/analytics): the counts of a known run, made through
the real accept path and store functions on the real PostgreSQL, equal what the run recorded
(counted here, independently, from the deliveries, their log and their events); the rollup
counts every row exactly once: run twice, run concurrently, with events arriving after it, and
with a transaction that commits after a rollup that started later; CSV says what JSON says;
an app sees only its own numbers; bad filters are 400 with a machine-readable reason."""

from __future__ import annotations

import csv
import datetime
import io
import json
import threading
from collections import Counter, defaultdict

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from rest_framework.test import APIClient

from devtools import demo
from notify import abtest, analytics, receipts, store, svgchart
from notify.models import EVENT_METRICS, Delivery, DeliveryEvent, DeliveryLog

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT = {"sms": {"body": "Sale: {{ code }}"}, "email": {"subject": "Sale", "text": "Use {{ code }}"}}
VARIANTS = [{"name": "a", "weight": 50, "content": {"en": {"sms": {"body": "A {{ code }}"},
                                                           "email": {"subject": "A", "text": "A {{ code }}"}}}},
            {"name": "b", "weight": 50, "content": {"en": {"sms": {"body": "B {{ code }}"},
                                                           "email": {"subject": "B", "text": "B {{ code }}"}}}}]
GROUPS = ",".join(analytics.GROUPS)


# --- the known run -------------------------------------------------------------------------------

def make_template(api, name="promo"):
    r = api.post("/api/v1/templates", {"name": name, "category": "marketing", "default_locale": "en",
                                       "content": {"en": CONTENT}, "variants": VARIANTS, "publish": True},
                 format="json")
    assert r.status_code == 201, r.content


def send(api, recipient, **body):
    r = api.post("/api/v1/notifications", {"recipient": recipient, **body}, format="json")
    assert r.status_code == 202, r.content
    return r.json()


def finish(delivery_id, status, reason=""):
    """What a worker does: claim the delivery, write the provider's outcome."""
    claimed = store.claim(delivery_id)
    assert claimed is not None, delivery_id
    assert store.record_outcome(delivery_id, claimed["attempts"], status, reason)


def known_run(api, prefix="u", recipients=12):
    """Sends of template ``promo`` (variants a and b) on SMS and email to ``recipients`` people
    (one opted out of SMS: suppressed at accept), plus one send with its own content; then, by
    delivery: sent, failed, dead-lettered and replayed then sent, left queued; and events on
    what was sent: delivered, opened, clicked, bounced, unsubscribed, complained. Returns the
    deliveries by what happened to them."""
    make_template(api)
    for i in range(recipients):
        r = api.put(f"/api/v1/recipients/{prefix}{i}", {"phone": f"+141555501{i:02d}",
                                                        "email": f"{prefix}{i}@example.com"}, format="json")
        assert r.status_code in (200, 201), r.content
    r = api.put(f"/api/v1/recipients/{prefix}0/preferences",
                {"preferences": [{"channel": "sms", "category": "", "enabled": False}]}, format="json")
    assert r.status_code == 200, r.content
    deliveries = []
    for i in range(recipients):
        body = send(api, f"{prefix}{i}", template="promo", data={"code": f"C{i}"}, channels=["sms", "email"])
        deliveries += body["deliveries"]
    own = send(api, f"{prefix}1", content={"email": {"subject": "hi", "text": "hi"}}, channels=["email"])
    deliveries += own["deliveries"]

    queued = [d for d in deliveries if d["status"] == "queued"]
    suppressed = [d for d in deliveries if d["status"] == "suppressed"]
    assert len(suppressed) == 1 and len(queued) == 2 * recipients
    failed, replayed, waiting, sent = queued[0], queued[1], queued[2], queued[3:]
    finish(failed["id"], "failed", "400")
    finish(replayed["id"], "dead_lettered", "max_attempts")
    assert store.replay_dead_letters([replayed["id"]], None) == 1
    finish(replayed["id"], "sent")
    for d in sent:
        finish(d["id"], "sent")
    sms = [d for d in sent if d["channel"] == "sms"]
    email = [d for d in sent if d["channel"] == "email"]
    for d in sms:
        receipts.record(d["id"], "delivered", source="api")
    for d in email[:8]:
        receipts.record(d["id"], "opened", source="api")
    for d in email[:3]:
        receipts.record(d["id"], "clicked", source="api")
        receipts.record(d["id"], "opened", source="api")  # a second open: counted once
    receipts.record(email[-1]["id"], "bounced", source="api")
    receipts.record(email[0]["id"], "unsubscribed", source="api")
    receipts.record(email[1]["id"], "complained", source="api")
    receipts.record(sms[0]["id"], "sent", source="api")  # a provider's own "sent": not a metric
    return {"suppressed": suppressed, "failed": failed, "replayed": replayed, "waiting": waiting, "sent": sent,
            "sms": sms, "email": email}


def direct_counts(app_id) -> dict[tuple, Counter]:
    """What the run recorded, counted here from every delivery of the app with its log and
    events (not from the analytics), by (day, template, version, variant, channel)."""
    out: dict[tuple, Counter] = defaultdict(Counter)
    for d in Delivery.objects.filter(notification__app_id=app_id).select_related("notification__template"):
        n = d.notification
        key = (n.created_at.astimezone(datetime.timezone.utc).date().isoformat(),
               n.template.name if n.template else None, n.template_version, d.variant or None, d.channel)
        log = list(DeliveryLog.objects.filter(delivery=d).values_list("from_status", "to_status"))
        counts = out[key]
        if d.status == "suppressed" and not log:
            counts["suppressed"] += 1
        else:
            counts["accepted"] += 1
        for old, new in log:
            if new == "sent":
                counts["sent"] += 1
            elif new in ("failed", "dead_lettered", "expired"):
                counts["failed"] += 1
            elif new in ("suppressed", "cancelled"):
                counts[new] += 1
            elif (old, new) == ("dead_lettered", "queued"):
                counts["replayed"] += 1
        for kind in DeliveryEvent.objects.filter(delivery=d).values_list("kind", flat=True):
            if kind in EVENT_METRICS:
                counts[kind] += 1
    return out


def api_rows(api, **params) -> dict[tuple, dict]:
    r = api.get("/api/v1/analytics", {"group_by": GROUPS, **params})
    assert r.status_code == 200, r.content
    return {(row["day"], row["template"], row["version"], row["variant"], row["channel"]): row for row in r.json()["rows"]}


def as_counts(rows: dict[tuple, dict]) -> dict[tuple, Counter]:
    return {key: +Counter(row["counts"]) for key, row in rows.items()}


def totals(api, **params) -> dict[str, int]:
    r = api.get("/api/v1/analytics", params)
    assert r.status_code == 200, r.content
    return r.json()["totals"]["counts"]


# --- counts ----------------------------------------------------------------------------------------

def test_analytics_totals_equal_what_a_known_run_recorded(api, app_key):
    run = known_run(api)
    done = analytics.rollup(lag=0)
    assert done.rows > 0 and done.counts > 0

    rows = api_rows(api)
    assert as_counts(rows) == {key: +counts for key, counts in direct_counts(app_key[0].id).items()}
    total = totals(api)
    sent_sms, sent_email = len(run["sms"]), len(run["email"])
    # 24 template deliveries and 1 own send, one SMS opted out: what the run did, in numbers.
    assert total == {"accepted": 24, "suppressed": 1, "sent": 22, "failed": 2, "replayed": 1, "cancelled": 0,
                     "delivered": sent_sms, "undelivered": 0, "opened": 8, "clicked": 3, "bounced": 1,
                     "unsubscribed": 1, "complained": 1}
    assert sent_sms + sent_email + 1 == 22  # the replayed delivery was sent too
    # Per variant and channel the rates are the counts' ratios.
    for row in rows.values():
        counts, rates = row["counts"], row["rates"]
        assert rates["sent_rate"] == (round(counts["sent"] / counts["accepted"], 6) if counts["accepted"] else None)
        assert rates["click_rate"] == (round(counts["clicked"] / counts["sent"], 6) if counts["sent"] else None)
    assert {key[3] for key in rows if key[1] == "promo"} == {"a", "b"}
    own = [row for key, row in rows.items() if key[1] is None]
    assert len(own) == 1 and own[0]["version"] is None and own[0]["counts"]["accepted"] == 1
    # Filters: one variant, one channel; the totals add up.
    a_email = totals(api, template="promo", version=1, variant="a", channel="email")
    b_email = totals(api, template="promo", version=1, variant="b", channel="email")
    email = totals(api, channel="email")
    assert a_email["opened"] + b_email["opened"] == email["opened"] == 8
    assert totals(api, variant="")["accepted"] == 1  # only the send without a variant


def test_running_the_rollup_again_counts_nothing_twice_and_later_events_count_next(api, app_key):
    run = known_run(api)
    analytics.rollup(lag=0)
    first = totals(api)
    again = analytics.rollup(lag=0)
    assert again.rows == 0 and totals(api) == first

    # After the rollup: an open, a click, a new send of its own; none shows until the next.
    late = run["email"][-2]
    receipts.record(late["id"], "opened", source="api")
    receipts.record(late["id"], "clicked", source="api")
    body = send(api, "u5", template="promo", data={"code": "late"}, channels=["email"])
    finish(body["deliveries"][0]["id"], "sent")
    assert totals(api) == first
    analytics.rollup(lag=0)
    after = totals(api)
    assert {m: after[m] - first[m] for m in after if after[m] != first[m]} == {
        "opened": 1, "clicked": 1, "accepted": 1, "sent": 1}
    assert as_counts(api_rows(api)) == {k: +c for k, c in direct_counts(app_key[0].id).items()}


def test_a_transaction_that_commits_after_a_later_rollup_is_counted_by_the_next(api, app_key):
    """Out-of-order commits: a worker's transaction (its log row stamped at its start) still open
    while a rollup runs is neither counted nor skipped; the next rollup counts it, once."""
    known_run(api)
    body = send(api, "u3", template="promo", data={"code": "slow"}, channels=["email"])
    slow = body["deliveries"][0]["id"]
    claimed = store.claim(slow)
    written, release = threading.Event(), threading.Event()

    def worker():
        try:
            with transaction.atomic():
                assert store.record_outcome(slow, claimed["attempts"], "sent", "")
                written.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert written.wait(30)
        held = analytics.rollup(lag=0)
        assert held.held_since is not None and held.upto <= held.held_since
        sent_before = totals(api)["sent"]
    finally:
        release.set()
        thread.join(30)
    assert sent_before == 22  # everything but the open transaction's row
    analytics.rollup(lag=0)
    assert totals(api)["sent"] == 23
    analytics.rollup(lag=0)
    assert totals(api)["sent"] == 23
    assert as_counts(api_rows(api)) == {k: +c for k, c in direct_counts(app_key[0].id).items()}


def test_concurrent_rollups_count_every_row_once(api, app_key):
    known_run(api)
    barrier = threading.Barrier(4)
    results, errors = [], []

    def run():
        try:
            barrier.wait(10)
            results.append(analytics.rollup(lag=0))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 4 and sum(1 for r in results if r.rows) >= 1
    # The windows the rollups counted do not overlap.
    windows = sorted((r.since, r.upto) for r in results if r.upto > r.since)
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))
    assert as_counts(api_rows(api)) == {k: +c for k, c in direct_counts(app_key[0].id).items()}


def test_the_management_command_rolls_up(api, app_key):
    known_run(api)
    out = io.StringIO()
    call_command("rollup_analytics", "--lag", "0", stdout=out)
    assert out.getvalue().startswith("counted ")
    assert totals(api)["accepted"] == 24
    assert api.get("/api/v1/analytics").json()["complete_until"] is not None


def test_a_dead_letter_replay_counts_the_failure_the_replay_and_the_new_outcome(api, app_key):
    run = known_run(api)
    analytics.rollup(lag=0)
    replayed = run["replayed"]
    r = api.get("/api/v1/analytics", {"group_by": "variant,channel", "template": "promo"})
    row = next(row for row in r.json()["rows"] if row["channel"] == replayed["channel"]
               and row["variant"] == Delivery.objects.get(id=replayed["id"]).variant)
    assert row["counts"]["replayed"] == 1 and row["counts"]["failed"] >= 1 and row["counts"]["sent"] >= 1


# --- formats, scope, filters --------------------------------------------------------------------

def test_csv_says_what_json_says(api, app_key):
    known_run(api)
    analytics.rollup(lag=0)
    params = {"group_by": "day,template,version,variant,channel"}
    body = api.get("/api/v1/analytics", params).json()
    by_format = api.get("/api/v1/analytics", {**params, "format": "csv"})
    by_accept = api.get("/api/v1/analytics", params, HTTP_ACCEPT="text/csv")
    assert by_format["Content-Type"].startswith("text/csv") and by_accept["Content-Type"].startswith("text/csv")
    assert by_format.content == by_accept.content
    assert "attachment" in by_format["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(by_format.content.decode())))
    assert len(lines) == len(body["rows"]) > 0
    for line, row in zip(lines, body["rows"]):
        for group in analytics.GROUPS:
            assert line[group] == ("" if row[group] is None else str(row[group]))
        assert {m: int(line[m]) for m in analytics.METRICS} == row["counts"]
        assert {r: (float(line[r]) if line[r] else None) for r in analytics.RATES} == row["rates"]


def test_an_app_sees_only_its_own_numbers(api, app_key):
    known_run(api)
    other_app, other_key = demo.create_app("analytics-other")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    make_template(other)
    other.put("/api/v1/recipients/x", {"email": "x@example.com"}, format="json")
    body = send(other, "x", template="promo", data={"code": "x"}, channels=["email"])
    finish(body["deliveries"][0]["id"], "sent")
    receipts.record(body["deliveries"][0]["id"], "opened", source="api")
    analytics.rollup(lag=0)

    assert totals(other) == {**dict.fromkeys(analytics.METRICS, 0), "accepted": 1, "sent": 1, "opened": 1}
    assert totals(api)["accepted"] == 24 and totals(api)["opened"] == 8
    assert as_counts(api_rows(other)) == {k: +c for k, c in direct_counts(other_app.id).items()}
    # A template of another app is unknown, not a way into its numbers.
    make_template(api, "only-mine")
    r = other.get("/api/v1/analytics", {"template": "only-mine"})
    assert r.status_code == 400 and r.json()["error"]["reasons"] == {"template": ["unknown_template"]}


def test_options_with_format_csv_describes_the_view_in_json(api):
    """DRF's OPTIONS answer (the view's description) is no report: asked with ``format=csv`` it
    was given to the CSV renderer, a 500 (found by make fuzz, bench/schema_fuzz.py)."""
    for url in ("/api/v1/analytics?format=csv", "/api/v1/analytics"):
        r = api.options(url, HTTP_ACCEPT="text/csv")
        assert r.status_code == 200 and r["Content-Type"] == "application/json", (r.status_code, r.content)
        assert r.json()["name"]


@pytest.mark.parametrize("params,field,reason", [
    ({"from": "2026-13-01"}, "from", "invalid"),
    ({"to": "yesterday"}, "to", "invalid"),
    ({"from": "2026-05-02", "to": "2026-05-01"}, "from", "from_after_to"),
    ({"from": "2024-01-01", "to": "2026-01-01"}, "to", "range_too_long"),
    ({"channel": "carrier-pigeon"}, "channel", "invalid_choice"),
    ({"group_by": "day,week"}, "group_by", "invalid_choice"),
    ({"version": "2"}, "version", "requires_template"),
    ({"template": "promo", "version": "0"}, "version", "min_value"),
    ({"template": "no-such"}, "template", "unknown_template"),
    ({"format": "xml"}, "format", "invalid_choice"),
    ({"colour": "red"}, "colour", "invalid"),
])
def test_bad_filters_are_400_with_a_machine_readable_reason(api, params, field, reason):
    make_template(api)
    for extra in ({}, {"HTTP_ACCEPT": "text/csv"}):
        r = api.get("/api/v1/analytics", params, **extra)
        assert r.status_code == 400 and r["Content-Type"] == "application/json", (r.status_code, r.content)
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and error["reasons"][field] == [reason], error


def test_without_an_api_key_it_is_401(client, db):
    assert client.get("/api/v1/analytics").status_code == 401


def test_the_schema_documents_the_endpoint_with_an_example(api):
    schema = json.loads(api.get("/api/v1/schema", {"format": "json"}).content)
    operation = schema["paths"]["/api/v1/analytics"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"from", "to", "template", "version", "variant",
                                                            "channel", "group_by", "format"}
    ok = operation["responses"]["200"]["content"]
    assert set(ok) == {"application/json", "text/csv"}
    example = next(iter(ok["application/json"]["examples"].values()))["value"]
    assert set(example["rows"][0]["counts"]) == set(analytics.METRICS)
    assert "400" in operation["responses"] and operation["security"] == [{"ApiKeyAuth": []}, {"OAuth2": ["analytics"]}]


# --- the pieces ----------------------------------------------------------------------------------

def test_two_proportion_z_test():
    # 200/1000 against 250/1000: z = 2.68, p = 0.0074 (pooled, two-sided).
    result = abtest.compare(200, 1000, 250, 1000)
    assert result.enough and result.significant
    assert round(result.z, 2) == 2.68 and round(result.p_value, 4) == 0.0074
    assert result.verdict == "p = 0.007: significant at 95%"
    assert abtest.compare(100, 1000, 110, 1000).verdict.endswith("not significant at 95%")
    tiny = abtest.compare(1, 3, 2, 3)
    assert not tiny.enough and tiny.p_value is None and tiny.verdict.startswith("too few to tell")
    assert abtest.compare(0, 0, 1, 5).verdict == "no data to compare"
    with pytest.raises(ValueError):
        abtest.compare(5, 3, 1, 3)


def test_svg_chart_draws_a_line_per_series_with_names_escaped():
    svg = svgchart.line_chart(["d1", "d2", "d3"], {"a": [1, 2, 3], "<b>": [0, 0, 4]}, chart_id="sent")
    assert svg.count("<polyline") == 2 and 'data-series="&lt;b&gt;"' in svg and 'data-values="0,0,4"' in svg
    assert "<b>" not in svg
    with pytest.raises(ValueError):
        svgchart.line_chart(["d1"], {"a": [1, 2]})

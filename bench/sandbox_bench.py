"""Throughput of the provider sandbox through the product's real client libraries.

    python bench/sandbox_bench.py [--count 2000] [--threads 4] [--port-base 19450]

Starts a sandbox in a temporary directory, then for each provider sends ``--count`` messages
from ``--threads`` threads over reused connections (APNs: one httpx HTTP/2 client per thread —
httpcore's sync HTTP/2 connection must not be shared between threads; FCM: google-auth
AuthorizedSession; Web Push: pywebpush; Twilio: twilio Client; SES: boto3 sesv2), bounded by
``--max-seconds`` per provider, and prints accepted requests/s per provider and overall, plus the
sandbox process's CPU time per request (client and server share the machine, so req/s is bounded
by both; the CPU column shows the sandbox's own cost).
Only 127.0.0.1 traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import httpx  # noqa: E402
import jwt  # noqa: E402
import requests  # noqa: E402
from google.auth.transport.requests import AuthorizedSession, Request  # noqa: E402
from google.oauth2 import service_account  # noqa: E402
from pywebpush import webpush  # noqa: E402
from twilio.http.http_client import TwilioHttpClient  # noqa: E402
from twilio.rest import Client  # noqa: E402

from sandbox.process import start_sandbox  # noqa: E402


def _session(ca: str) -> requests.Session:
    s = requests.Session()
    s.verify = ca
    s.trust_env = False  # a machine-wide REQUESTS_CA_BUNDLE would override verify
    return s


def make_senders(cfg: dict, control) -> dict:
    """provider → (factory() -> send(i) -> bool accepted). One factory call per thread."""
    ca = cfg["ca_file"]
    a = cfg["apns"]
    apns_token = jwt.encode({"iss": a["team_id"], "iat": int(time.time())},
                            Path(a["key_file"]).read_text(), algorithm="ES256",
                            headers={"kid": a["key_id"]})
    def apns():
        # one HTTP/2 connection per thread: httpcore's sync HTTP/2 connection is not safe to
        # share between threads (stream ids can go out in the wrong order → PROTOCOL_ERROR).
        apns_client = httpx.Client(http2=True, verify=ca, timeout=30)

        def send(i: int) -> bool:
            r = apns_client.post(
                f"{a['url']}/3/device/{'ab' * 32}",
                json={"aps": {"alert": {"title": "bench", "body": str(i)}}},
                headers={"authorization": f"bearer {apns_token}", "apns-topic": a["topic"],
                         "apns-push-type": "alert", "apns-id": str(uuid.uuid4())})
            return r.status_code == 200
        return send

    f = cfg["fcm"]
    creds = service_account.Credentials.from_service_account_file(
        f["service_account_file"], scopes=["https://www.googleapis.com/auth/firebase.messaging"])
    fcm_url = f"{f['url']}/v1/projects/{f['project_id']}/messages:send"

    def fcm():
        s = AuthorizedSession(creds, auth_request=Request(_session(ca)))
        s.verify, s.trust_env = ca, False

        def send(i: int) -> bool:
            r = s.post(fcm_url, json={"message": {
                "token": "bench-token-" + "x" * 140, "notification": {"title": "b"},
                "data": {"notify_delivery_id": str(uuid.uuid4())},
                "android": {"priority": "HIGH", "ttl": "3600s"}}})
            return r.status_code == 200
        return send

    w = cfg["webpush"]
    sub = control.create_subscription()

    def webpush_factory():
        s = _session(ca)

        def send(i: int) -> bool:
            r = webpush(sub, json.dumps({"title": "b", "n": i}),
                        vapid_private_key=w["vapid_private_key_file"],
                        vapid_claims={"sub": w["vapid_subject"]}, ttl=60, requests_session=s)
            return r.status_code == 201
        return send

    t = cfg["twilio"]

    def twilio():
        http = TwilioHttpClient()
        http.session.verify, http.session.trust_env = ca, False
        client = Client(t["account_sid"], t["auth_token"], http_client=http)
        client.api.base_url = t["url"]

        def send(i: int) -> bool:
            m = client.messages.create(to="+14155550100", from_=t["from_number"],
                                       body=f"bench {i}")
            return m.status == "queued"
        return send

    e = cfg["ses"]

    def ses():
        client = boto3.client("sesv2", endpoint_url=e["url"], region_name=e["region"],
                              aws_access_key_id=e["access_key_id"],
                              aws_secret_access_key=e["secret_access_key"], verify=ca)

        def send(i: int) -> bool:
            r = client.send_email(
                FromEmailAddress=e["from_address"],
                Destination={"ToAddresses": ["bench@example.org"]},
                Content={"Simple": {"Subject": {"Data": "bench"},
                                    "Body": {"Text": {"Data": f"bench {i}"}},
                                    "Headers": [{"Name": "X-Notify-Delivery-Id",
                                                 "Value": str(uuid.uuid4())}]}})
            return bool(r.get("MessageId"))
        return send

    return {"apns": apns, "fcm": fcm, "webpush": webpush_factory, "twilio": twilio,
            "ses": ses}


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds used so far by process ``pid`` (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_one(factory, count: int, threads: int, max_seconds: float) -> tuple[int, int, float]:
    """Send ``count`` messages from ``threads`` threads; returns (accepted, sent, seconds)."""
    senders = [factory() for _ in range(threads)]
    senders[0](0)  # warm-up: connection, TLS, token fetch
    counter = iter(range(count))
    lock = threading.Lock()
    stats = {"ok": 0, "sent": 0}
    deadline = time.monotonic() + max_seconds

    def worker(send):
        ok = sent = 0
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            try:
                ok += bool(send(i))
            except Exception as exc:  # count as not accepted, keep going
                print(f"  error: {type(exc).__name__}: {exc}", file=sys.stderr)
            sent += 1
        with lock:
            stats["ok"] += ok
            stats["sent"] += sent

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, senders))
    return stats["ok"], stats["sent"], time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="messages per provider")
    parser.add_argument("--threads", type=int, default=4, help="client threads per provider")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per provider")
    parser.add_argument("--port-base", type=int, default=19450)
    parser.add_argument("--providers", default="apns,fcm,twilio,ses,webpush")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        handle = start_sandbox(tmp, args.port_base)
        try:
            senders = make_senders(handle.config, handle.control)
            total_ok, total_time = 0, 0.0
            pid = handle.process.pid
            print(f"{'provider':<10}{'accepted':>10}{'sent':>8}{'seconds':>10}{'req/s':>10}"
                  f"{'sandbox CPU ms/req':>20}")
            for name in args.providers.split(","):
                cpu0 = cpu_seconds(pid)
                ok, sent, secs = run_one(senders[name], args.count, args.threads,
                                         args.max_seconds)
                cpu1 = cpu_seconds(pid)
                cpu = f"{(cpu1 - cpu0) * 1000 / max(sent, 1):.2f}" if cpu0 is not None else "?"
                total_ok += ok
                total_time += secs
                print(f"{name:<10}{ok:>10}{sent:>8}{secs:>10.2f}{ok / secs:>10.1f}{cpu:>20}",
                      flush=True)
            print(f"{'overall':<10}{total_ok:>10}{'':>8}{total_time:>10.2f}"
                  f"{total_ok / total_time:>10.1f}")
            recs = handle.control.records_page(since=None)
            print(f"records kept by the sandbox: {len(recs['records'])}")
        finally:
            handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

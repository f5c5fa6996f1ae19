"""Reference (b) of issue 14's throughput target: a plain Celery pipeline, one task per message,
calling the providers' client libraries directly. notify's end-to-end rate is compared with it in
``bench/e2e.py`` (target: notify ≥ 2 × this).

What it is: the simplest thing a team would write without notify. The driver publishes one task
per message straight to a per-channel queue (no database, no outbox, no idempotency, no policy,
no rate limit, no retries, no receipts); each task builds the provider request with the same
libraries notify's adapters use and counts the answer in Redis.

- APNs: ``httpx.Client(http2=True)`` and an ES256 provider token (PyJWT), re-signed every 20 min;
- FCM HTTP v1: google-auth ``AuthorizedSession`` of the service account (OAuth2 token cached);
- Web Push: pywebpush ``WebPusher`` (aes128gcm) with a py_vapid header cached per origin;
- SMS: ``twilio.rest.Client(...).messages.create`` over the sandbox's API key;
- email: boto3 ``sesv2`` ``send_email``.

Kept fair: the clients are built once per worker process (lazily, after the prefork fork, as
notify's registry does); the workers run with notify's Celery options (late ack, reject on worker
lost, prefetch 1, publisher confirms) and the same pool kind and concurrency; they call the same
sandbox (its ``sandbox.json``).

The workers read three variables the driver (:func:`measure`) sets in their environment:
``BENCH_PLAIN_BROKER_URL``, ``BENCH_PLAIN_REDIS_URL`` and ``BENCH_PLAIN_SANDBOX_DIR``. This
module imports neither Django nor notify, so its workers carry none of their cost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from celery import Celery
from kombu import Exchange, Queue

CHANNELS = ("apns", "fcm", "webpush", "sms", "email")
#: A provider token is valid 60 min; APNs refuses one refreshed more than every 20 min.
APNS_TOKEN_SECONDS = 20 * 60
TITLE, BODY = "주문이 발송되었습니다", "지우 님, 주문 B-1이 발송되었습니다."

_exchange = Exchange("bench_plain", type="direct", durable=True)
app = Celery("bench_plain", broker=os.environ.get("BENCH_PLAIN_BROKER_URL", "amqp://guest:guest@127.0.0.1//"))
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True, result_backend=None,
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    broker_transport_options={"confirm_publish": True},
    task_queues=[Queue(f"bench_plain_{c}", _exchange, routing_key=c, durable=True) for c in CHANNELS],
)


def queue_of(channel: str) -> str:
    """The plain pipeline's queue of ``channel`` (never one of notify's)."""
    return f"bench_plain_{channel}"


def _session(ca_file: str, session=None):
    """``session`` (or a new requests session) trusting only the sandbox's CA: with ``trust_env``
    on, requests would let ``REQUESTS_CA_BUNDLE`` override ``verify`` (as channels/http.py notes)."""
    import requests

    session = session if session is not None else requests.Session()
    session.trust_env = False
    session.verify = ca_file
    return session


class _Clients:
    """This process's provider clients, built on first use (after the fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        directory = Path(os.environ["BENCH_PLAIN_SANDBOX_DIR"])
        self.cfg = json.loads((directory / "sandbox.json").read_text())
        self.ca = self.cfg["ca_file"]
        import redis

        self.redis = redis.Redis.from_url(os.environ["BENCH_PLAIN_REDIS_URL"])
        self._apns = self._fcm = self._webpush = self._twilio = self._ses = None

    # Each accessor builds its client once; a pool process serves one channel, so it builds one.
    def apns(self):
        if self._apns is None:
            import ssl

            import httpx

            c = self.cfg["apns"]
            client = httpx.Client(base_url=c["url"], http1=False, http2=True,
                                  verify=ssl.create_default_context(cafile=self.ca), timeout=10)
            self._apns = {"client": client, "key": Path(c["key_file"]).read_bytes(), "cfg": c, "token": None, "at": 0.0}
        a = self._apns
        if time.time() - a["at"] > APNS_TOKEN_SECONDS:
            import jwt

            a["at"] = time.time()
            a["token"] = jwt.encode({"iss": a["cfg"]["team_id"], "iat": int(a["at"])}, a["key"],
                                    algorithm="ES256", headers={"kid": a["cfg"]["key_id"]})
        return a

    def fcm(self):
        if self._fcm is None:
            from google.auth.transport.requests import AuthorizedSession, Request
            from google.oauth2 import service_account

            c = self.cfg["fcm"]
            credentials = service_account.Credentials.from_service_account_file(
                c["service_account_file"], scopes=["https://www.googleapis.com/auth/firebase.messaging"])
            token_session = _session(self.ca)
            session = _session(self.ca, AuthorizedSession(credentials, auth_request=Request(token_session)))
            self._fcm = (session, f"{c['url']}/v1/projects/{c['project_id']}/messages:send")
        return self._fcm

    def webpush(self):
        if self._webpush is None:
            from py_vapid import Vapid

            c = self.cfg["webpush"]
            session = _session(self.ca)
            vapid = Vapid.from_pem(Path(c["vapid_private_key_file"]).read_bytes())
            self._webpush = {"session": session, "vapid": vapid, "subject": c["vapid_subject"], "headers": {}}
        return self._webpush

    def twilio(self):
        if self._twilio is None:
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            c = self.cfg["twilio"]
            http_client = TwilioHttpClient(timeout=10, max_retries=0)
            _session(self.ca, http_client.session)
            client = Client(c["api_key_sid"], c["api_key_secret"], c["account_sid"], http_client=http_client)
            client.api.base_url = c["url"]
            client.edge = client.region = None
            self._twilio = (client, c["from_number"])
        return self._twilio

    def ses(self):
        if self._ses is None:
            import boto3

            c = self.cfg["ses"]
            client = boto3.session.Session(aws_access_key_id=c["access_key_id"],
                                           aws_secret_access_key=c["secret_access_key"],
                                           region_name=c["region"]).client(
                "sesv2", endpoint_url=c["url"], verify=self.ca)
            self._ses = (client, c["from_address"])
        return self._ses


_clients: _Clients | None = None


def clients() -> _Clients:
    """This process's clients (a forked child never reuses its parent's sockets)."""
    global _clients
    if _clients is None or _clients.pid != os.getpid():
        _clients = _Clients()
    return _clients


@contextlib.contextmanager
def _counted(key: str):
    """Count one message in Redis: ``key`` when the block calls ``done(True)``, ``key:errors``
    when it calls ``done(False)`` or raises (logged; no retry in this pipeline)."""
    outcome = []
    try:
        yield outcome.append
    except Exception:  # noqa: BLE001 - the driver reports the count of errors
        logging.getLogger(__name__).exception("plain pipeline send failed")
    clients().redis.incr(key if outcome and outcome[0] else key + ":errors")


@app.task(name="bench_plain.apns")
def send_apns(token: str, delivery_id: str, key: str) -> None:
    """One alert push: ``POST /3/device/<token>`` over HTTP/2 with the provider token."""
    a = clients().apns()
    with _counted(key) as done:
        response = a["client"].post(f"/3/device/{token}", content=json.dumps(
        {"aps": {"alert": {"title": TITLE, "body": BODY}}}).encode(), headers={
        "authorization": f"bearer {a['token']}", "apns-topic": a["cfg"]["topic"], "apns-push-type": "alert",
        "apns-priority": "10", "apns-id": delivery_id})
        done(response.status_code == 200)


@app.task(name="bench_plain.fcm")
def send_fcm(token: str, delivery_id: str, key: str) -> None:
    """One FCM HTTP v1 ``messages:send``."""
    session, url = clients().fcm()
    with _counted(key) as done:
        response = session.post(url, json={"message": {
            "token": token, "notification": {"title": TITLE, "body": BODY},
            "data": {"notify_delivery_id": delivery_id}}}, timeout=10)
        done(response.status_code == 200)


@app.task(name="bench_plain.webpush")
def send_webpush(subscription: dict, delivery_id: str, key: str) -> None:
    """One encrypted Web Push POST (aes128gcm) with a VAPID header cached per origin."""
    from pywebpush import WebPusher

    w = clients().webpush()
    parts = urlsplit(subscription["endpoint"])
    origin = f"{parts.scheme}://{parts.netloc}"
    header = w["headers"].get(origin)
    if header is None or header[1] - time.time() < 3600:
        exp = int(time.time()) + 12 * 3600
        header = (w["vapid"].sign({"aud": origin, "exp": exp, "sub": w["subject"]})["Authorization"], exp)
        w["headers"][origin] = header
    data = json.dumps({"title": TITLE, "body": BODY, "notify_delivery_id": delivery_id}).encode()
    with _counted(key) as done:
        response = WebPusher(subscription, requests_session=w["session"]).send(
            data, headers={"Authorization": header[0], "Urgency": "normal"}, ttl=3600,
            content_encoding="aes128gcm", timeout=10)
        done(response.status_code in (200, 201, 202))


@app.task(name="bench_plain.sms")
def send_sms(phone: str, delivery_id: str, key: str) -> None:
    """One Twilio ``messages.create`` (no status callback: no receipts in this pipeline)."""
    client, from_number = clients().twilio()
    with _counted(key) as done:
        client.messages.create(to=phone, from_=from_number, body=BODY)
        done(True)


@app.task(name="bench_plain.email")
def send_email(address: str, delivery_id: str, key: str) -> None:
    """One SES v2 ``SendEmail`` (simple content, text and HTML)."""
    client, sender = clients().ses()
    with _counted(key) as done:
        client.send_email(FromEmailAddress=sender, Destination={"ToAddresses": [address]}, Content={"Simple": {
            "Subject": {"Data": TITLE, "Charset": "UTF-8"},
            "Body": {"Text": {"Data": BODY, "Charset": "UTF-8"},
                     "Html": {"Data": f"<p>{BODY}</p>", "Charset": "UTF-8"}}}},
            EmailTags=[{"Name": "delivery_id", "Value": delivery_id}])
        done(True)


TASKS = {"apns": send_apns, "fcm": send_fcm, "webpush": send_webpush, "sms": send_sms, "email": send_email}


def measure(stack, addresses: list[dict], messages: int, concurrency: int, redis_url: str, broker_url: str,
            warmup: int = 20, timeout: float = 600) -> dict:
    """Run the plain pipeline on ``stack``'s sandbox and return its figures.

    Args:
        stack: a started ``devtools.stack.Stack`` (its sandbox is used; its notify workers may run
            but are idle).
        addresses: recipients as ``{"apns": token, "fcm": token, "webpush": subscription dict,
            "sms": E.164, "email": address}``, used round robin.
        messages: messages per channel (the same mix as bench/e2e.py: one of each per notification).
        concurrency: processes per channel pool (notify's ``--concurrency``).
        warmup: messages per channel sent and finished before the clock starts.

    Returns:
        ``{"deliveries": n, "seconds": s, "rate": deliveries/s, "errors": n}``.

    Raises:
        RuntimeError: a warm-up send failed, or the messages did not finish within ``timeout`` s.
    """
    from devtools.stack import CELERY
    import redis

    stack.env.update(BENCH_PLAIN_BROKER_URL=broker_url, BENCH_PLAIN_REDIS_URL=redis_url,
                     BENCH_PLAIN_SANDBOX_DIR=str(stack.config.sandbox_dir.resolve()))
    names = []
    for channel in CHANNELS:
        name = f"plain-{channel}"
        stack._spawn(name, [CELERY, "-A", "bench.plain_pipeline", "worker", "-Q", queue_of(channel),
                            "-n", f"{name}@%h", "-P", stack.config.worker_pool, "-c", str(concurrency),
                            "--prefetch-multiplier", "1", "-O", "fair", "--without-gossip", "--without-mingle",
                            "-l", "WARNING"])
        names.append(name)
    r = redis.Redis.from_url(redis_url)
    try:
        def publish(count: int, key: str) -> None:
            with app.producer_or_acquire() as producer:
                for i in range(count):
                    a = addresses[i % len(addresses)]
                    for channel in CHANNELS:
                        TASKS[channel].apply_async((a[channel], str(uuid.uuid4()), key), queue=queue_of(channel),
                                                   routing_key=channel, producer=producer)

        def wait(key: str, total: int, started: float) -> int:
            while int(r.get(key) or 0) + int(r.get(key + ":errors") or 0) < total:
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"plain pipeline: {r.get(key)} of {total} done after {timeout} s")
                time.sleep(0.05)
            return int(r.get(key + ":errors") or 0)

        app.conf.broker_url = broker_url
        warm_key = f"bench:plain:warm:{secrets.token_hex(4)}"
        publish(warmup, warm_key)  # also waits for the pools: their first tasks build the clients
        warm_errors = wait(warm_key, warmup * len(CHANNELS), time.monotonic())
        if warm_errors:
            raise RuntimeError(f"plain pipeline: {warm_errors} of {warmup * len(CHANNELS)} warm-up sends failed "
                               f"(see {stack.config.log_dir}/plain-*.log)")
        key = f"bench:plain:{secrets.token_hex(4)}"
        started = time.monotonic()
        publish(messages, key)
        errors = wait(key, messages * len(CHANNELS), started)
        seconds = time.monotonic() - started
    finally:
        stack._terminate(names)
    total = messages * len(CHANNELS)
    return {"deliveries": total, "seconds": seconds, "rate": total / seconds, "errors": errors}

"""Runs the whole sandbox in one asyncio process: hypercorn serves each provider app on its own
port, SES's moto backend runs on a worker thread, SMTP on aiosmtpd's thread; SES events go out
through the SNS stand-in's topic."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .apns import ApnsApp
from .control import build_control_app
from .credentials import ensure_credentials, write_sandbox_files
from .fcm import FcmApp
from .ports import HOST, Ports, connect_host, url_host
from .ses import SesApp
from .ses_events import SesEvents
from .smtp import start_smtp
from .sns import SnsTopic
from .state import SandboxState
from .twilio_api import TwilioApp
from .webpush import WebPushApp

log = logging.getLogger("sandbox")


def _config(port: int, tls: bool, creds, alpn: list[str] | None = None,
            host: str = HOST) -> Config:
    cfg = Config()
    cfg.bind = [f"{url_host(host)}:{port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    cfg.keep_alive_timeout = 600
    cfg.keep_alive_max_requests = 10**9
    cfg.graceful_timeout = 1.0
    cfg.backlog = 1024
    cfg.h2_max_concurrent_streams = 1000
    if tls:
        cfg.certfile = str(creds.tls.cert_file)
        cfg.keyfile = str(creds.tls.key_file)
        if alpn is not None:
            cfg.alpn_protocols = alpn
    return cfg


async def _serve(app, cfg: Config, stop: asyncio.Event) -> None:
    try:
        await serve(app, cfg, shutdown_trigger=stop.wait)
    except asyncio.CancelledError:
        pass  # cancelled at shutdown while hypercorn waited on idle keep-alive connections
    except Exception:
        if not stop.is_set():
            raise
        # hypercorn's own cleanup can trip over the cancellation; nothing left to do then


def _port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((connect_host(host), port), timeout=0.2):
            return True
    except OSError:
        return False


async def run(directory: str | Path, port_base: int,
              callback_delays: tuple[float, float] = (0.05, 0.15),
              ready_timeout: float = 30.0, host: str = HOST, public_host: str = HOST,
              callback_hosts: tuple[str, ...] = ()) -> int:
    """Start every service, print ``sandbox ready <dir>/sandbox.json`` once all ports accept
    connections, and serve until SIGTERM/SIGINT. Returns the process exit code.

    ``host`` is the bind address of every port, ``public_host`` the host name written into the
    advertised URLs (and the server certificate), ``callback_hosts`` the hosts Twilio callbacks
    may reach besides loopback."""
    ports = Ports(port_base, public_host)
    busy = [p for p in ports.all() if _port_open(p, host)]
    if busy:
        print(f"sandbox: ports already in use: {busy}", file=sys.stderr, flush=True)
        return 2
    creds = ensure_credentials(directory, ports)
    state = SandboxState(creds, callback_delays=callback_delays, callback_hosts=callback_hosts)

    loop = asyncio.get_running_loop()
    state.loop = loop
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    ses = SesApp(state)
    await loop.run_in_executor(None, ses.start)
    twilio = TwilioApp(state)
    sns = SnsTopic(state)
    SesEvents(state, sns)
    apps = [
        (build_control_app(state), _config(ports.control, False, creds, host=host)),
        (ApnsApp(state), _config(ports.apns, True, creds, alpn=["h2"], host=host)),
        (FcmApp(state), _config(ports.fcm, True, creds, host=host)),
        (WebPushApp(state), _config(ports.webpush, True, creds, host=host)),
        (twilio, _config(ports.twilio, True, creds, host=host)),
        (ses, _config(ports.ses, True, creds, host=host)),
        (sns.app(), _config(ports.sns, True, creds, host=host)),
    ]
    smtp = await loop.run_in_executor(None, start_smtp, state, host, ports.smtp)
    servers = [asyncio.create_task(_serve(app, cfg, stop)) for app, cfg in apps]

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.2)
            state.records.flush()

    flush_task = asyncio.create_task(flusher())
    code = 0
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            failed = [t for t in servers if t.done()]
            if failed:
                exc = failed[0].exception()
                print(f"sandbox: a server failed to start: {exc!r}", file=sys.stderr, flush=True)
                code = 1
                stop.set()
                break
            if all(await asyncio.gather(*(loop.run_in_executor(None, _port_open, p, host)
                                          for p in ports.all()))):
                out = write_sandbox_files(creds)
                print(f"sandbox ready {out}", flush=True)
                break
            if time.monotonic() > deadline:
                print("sandbox: ports did not open in time", file=sys.stderr, flush=True)
                code = 1
                stop.set()
                break
            await asyncio.sleep(0.05)
        await stop.wait()
    finally:
        stop.set()
        # connections still open at shutdown get cancelled; their noise is not news
        loop.set_exception_handler(lambda _loop, _ctx: None)
        # Python >= 3.11.6's Server.wait_closed() waits for every open keep-alive connection:
        # give hypercorn a moment to finish, then cancel what still waits on idle clients.
        _, pending = await asyncio.wait(servers, timeout=1.0)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        flush_task.cancel()
        await twilio.aclose()
        await sns.aclose()
        await loop.run_in_executor(None, smtp.stop)
        ses.close()
        state.records.flush()
        state.records.close()
    return code

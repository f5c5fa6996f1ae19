"""`make run` (``python -m devtools.run``) as an operator uses it: its console's links answer,
Flower asks for its login and lists every channel's queue, and SIGTERM (what Ctrl-C does too)
makes it say what it stops and stop everything within a few seconds."""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

# The database set up (migrated) for the stack's processes; they commit, hence transaction=True.
pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
FLOWER_LOGIN = "ops:flower-test-secret"


def get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_make_run_answers_then_says_what_it_stops_and_stops_within_seconds(django_db_setup, tmp_path):
    api_port = int(os.environ["NOTIFY_TEST_API_PORT"]) + 1
    flower_port = api_port + 1
    sandbox_base = int(os.environ["NOTIFY_TEST_SANDBOX_PORT_BASE"]) + 40
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test",
           "NOTIFY_DB_NAME": settings.DATABASES["default"]["NAME"],
           "NOTIFY_VAR_DIR": str(tmp_path), "NOTIFY_SANDBOX_DIR": str(tmp_path / "sandbox"),
           "NOTIFY_FLOWER_BASIC_AUTH": FLOWER_LOGIN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "devtools.run", "--no-demo", "--port", str(api_port),
                             "--flower-port", str(flower_port), "--sandbox-port-base", str(sandbox_base)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []

    def read_until(marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in seen):
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"no {marker!r} in the output:\n" + "\n".join(seen)) from None

    try:
        read_until("running; Ctrl-C stops everything", timeout=180)
        # The console's first link answers, with links to every resource.
        api_line = next(line for line in seen if line.startswith("API "))
        root_url = api_line.split()[1]
        assert root_url == f"http://127.0.0.1:{api_port}/api/v1/"
        status, body = get(root_url)
        assert status == 200 and "notifications" in json.loads(body)["links"]

        # Flower: a login, then every channel's queue with its depth (from RabbitMQ's management API).
        assert get(f"http://127.0.0.1:{flower_port}/api/queues/length")[0] == 401
        assert get(f"http://127.0.0.1:{flower_port}/api/queues/length", "ops:wrong")[0] == 401
        status, body = get(f"http://127.0.0.1:{flower_port}/api/queues/length", FLOWER_LOGIN)
        assert status == 200
        depths = {q["name"]: q["messages"] for q in json.loads(body)["active_queues"]}
        assert set(settings.NOTIFY_CHANNELS) <= set(depths), depths
        assert all(isinstance(depths[c], int) for c in settings.NOTIFY_CHANNELS)

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        took = time.monotonic() - started
        read_until("stopped ", timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    output = "\n".join(seen)
    print(f"{output}\n(exited {took:.1f} s after SIGTERM)")
    stopping = next(line for line in seen if line.startswith("stopping "))
    expected = {"sandbox", "api", "relay", "maintenance", "flower"} | {f"worker-{c}" for c in settings.NOTIFY_CHANNELS}
    assert set(stopping.removeprefix("stopping ").rstrip(" …").split(", ")) == expected, output
    assert f"stopped {len(expected)} processes in" in output
    assert took < 5, f"stopping took {took:.1f} s:\n{output}"
    assert proc.returncode == 0, output
    for port in (api_port, flower_port, sandbox_base):
        assert not port_open(port), f"port {port} still open after the stop"

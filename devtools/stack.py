"""Start and stop the whole local stack as child processes: provider sandbox, API (gunicorn),
the outbox relay, one Celery worker pool per channel (or several: ``pools_per_channel``), the
maintenance worker with beat (dispatcher), and Flower.

Used by ``python -m devtools.run`` (``make run``), by the end-to-end tests and by the benchmarks,
so all three run the same processes the same way. Nothing here runs in production: there each
process is started by the operator's supervisor (see docker-compose.yml).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

PYTHON = sys.executable
CELERY = str(Path(sys.executable).with_name("celery"))
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


@dataclass
class StackConfig:
    """Where the stack listens and what it uses.

    Attributes:
        env: extra environment for every child (database name, broker URL, ...).
        api_port: the API's port on 127.0.0.1.
        sandbox_port_base: the sandbox's first port (see sandbox/README.md).
        sandbox_dir: where the sandbox keeps credentials and records.
        log_dir: one log file per child.
        concurrency: worker processes per pool.
        flower_port: None to not start Flower.
        worker_log_level: the channel workers' log level.
    """

    env: dict[str, str] = field(default_factory=dict)
    api_port: int = 8000
    sandbox_port_base: int = 9400
    sandbox_dir: Path = Path("var/sandbox")
    log_dir: Path = Path("var/log")
    concurrency: int = 2
    api_workers: int = 2
    api_threads: int = 8
    flower_port: int | None = 5555
    channels: tuple[str, ...] = field(default_factory=lambda: tuple(settings.NOTIFY_CHANNELS))
    worker_log_level: str = os.environ.get("NOTIFY_WORKER_LOG_LEVEL", "INFO")
    #: Celery pool of the channel workers: ``prefork`` (a process per concurrent send) or
    #: ``threads`` (one process, sends overlap while waiting on the provider).
    worker_pool: str = os.environ.get("NOTIFY_WORKER_POOL", "prefork")
    #: Where the children write their Prometheus samples (NOTIFY_METRICS_DIR); None: ``log_dir/metrics``.
    #: Emptied at each start, so a scrape counts this run only.
    metrics_dir: Path | None = None
    #: Raise the sandbox's scheduling priority by this much (0: leave it; needs root).
    sandbox_priority: int = int(os.environ.get("NOTIFY_SANDBOX_PRIORITY", "0"))
    #: Worker pools (separate Celery worker processes, each of ``concurrency``) per channel; a
    #: channel not named gets one. Several pools on one queue are several hosts' workers sharing
    #: it (``{"apns": 2}``: bench/apns_tokens.py, one APNs key used by every process of both).
    pools_per_channel: dict[str, int] = field(default_factory=dict)

    def pools(self, channel: str) -> int:
        """How many worker pools ``channel`` gets (at least one)."""
        return max(1, self.pools_per_channel.get(channel, 1))


class Stack:
    """The running children. ``start()`` waits until each is ready; ``stop()`` ends them all."""

    def __init__(self, config: StackConfig):
        self.config = config
        self.procs: dict[str, subprocess.Popen] = {}
        #: Where each child's log stood when it was started: a restarted child appends to the
        #: same file, and only what it wrote itself tells that it is ready.
        self._log_start: dict[str, int] = {}
        config.log_dir.mkdir(parents=True, exist_ok=True)
        config.sandbox_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_dir = (config.metrics_dir or config.log_dir / "metrics").resolve()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "settings.dev"),
            "NOTIFY_SANDBOX_DIR": str(config.sandbox_dir.resolve()),
            "NOTIFY_PUBLIC_URL": self.api_url,
            "PYTHONUNBUFFERED": "1",
            "NOTIFY_METRICS_DIR": str(self.metrics_dir),
            **config.env,
        }

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.config.sandbox_port_base}"

    # -- children -----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.config.log_dir / f"{name}.log", "ab")
        self._log_start[name] = log.tell()
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=settings.BASE_DIR, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_sandbox(self) -> None:
        self._spawn("sandbox", [PYTHON, "-m", "sandbox", "--dir", str(self.config.sandbox_dir.resolve()),
                                "--port-base", str(self.config.sandbox_port_base)])
        if self.config.sandbox_priority:
            # The sandbox stands in for providers that run elsewhere; on a small machine the
            # fair scheduler would otherwise give the one process serving every worker the same
            # share as each of them.
            try:
                os.setpriority(os.PRIO_PROCESS, self.procs["sandbox"].pid, -self.config.sandbox_priority)
            except PermissionError:
                pass
        _wait_http(self.control_url + "/health", "sandbox", self.procs["sandbox"])

    def start_api(self) -> None:
        self._spawn("api", [GUNICORN, "notify.wsgi", "--bind", f"127.0.0.1:{self.config.api_port}",
                            "--workers", str(self.config.api_workers), "--worker-class", "gthread",
                            "--threads", str(self.config.api_threads), "--timeout", "30", "--graceful-timeout", "5"])
        _wait_http(self.api_url + "/health/live", "api", self.procs["api"])

    def start_relay(self) -> None:
        """Start the outbox relay (``manage.py relay``), which publishes committed deliveries."""
        self._spawn("relay", [PYTHON, "manage.py", "relay"])
        self._wait_log("relay", "outbox relay", "ready", timeout=60)

    def stop_relay(self) -> None:
        self._stop("relay")

    @staticmethod
    def worker_name(channel: str, pool: int = 1) -> str:
        """The child (and log file) name of a channel's worker pool: ``worker-<channel>`` for
        the first, ``worker-<channel>-<pool>`` for the others; its Celery node is the same
        without ``worker-`` (``<channel>-2@host``), unique on the host."""
        return f"worker-{channel}" if pool == 1 else f"worker-{channel}-{pool}"

    def spawn_worker(self, channel: str, pool: int = 1) -> None:
        """Start worker pool ``pool`` (1, 2, ...) of one channel (``-Q <channel>``) without waiting for it."""
        from notify.queues import queue_name

        name = self.worker_name(channel, pool)
        self._spawn(name, [
            CELERY, "-A", "notify", "worker", "-Q", queue_name(channel), "-n", f"{name[len('worker-'):]}@%h",
            "-P", self.config.worker_pool, "-c", str(self.config.concurrency), "--prefetch-multiplier", "1", "-O", "fair",
            "--without-gossip", "--without-mingle", "-l", self.config.worker_log_level])

    def start_worker(self, channel: str, pool: int = 1) -> None:
        self.spawn_worker(channel, pool)
        self.wait_worker(channel, pool=pool)

    def wait_worker(self, channel: str, timeout: float = 60, pool: int = 1) -> None:
        name = self.worker_name(channel, pool)
        self._wait_log(name, f"{name[len('worker-'):]}@", "ready.", timeout=timeout)

    def stop_worker(self, channel: str, pool: int = 1) -> None:
        self._stop(self.worker_name(channel, pool))

    def stop_api(self) -> None:
        self._stop("api")

    def stop_maintenance(self) -> None:
        """Stop the maintenance worker and its beat (the dispatcher)."""
        self._stop("maintenance")

    def start_maintenance(self) -> None:
        self._spawn("maintenance", [CELERY, "-A", "notify", "worker", "-Q", "maintenance", "-n", "maintenance@%h",
                                    "-c", "1", "--beat", "-s", str(self.config.log_dir / "celerybeat-schedule"),
                                    "--without-gossip", "--without-mingle", "-l", "INFO"])
        self._wait_log("maintenance", "maintenance@", "ready.", timeout=60)

    def _wait_log(self, name: str, node: str, word: str, timeout: float) -> None:
        """Wait until child ``name`` has logged a line holding both ``node`` and ``word``;
        RuntimeError if it exits first or ``timeout`` seconds pass."""
        path, proc = self.config.log_dir / f"{name}.log", self.procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready (see {path})")
            with open(path, "rb") as log:
                log.seek(self._log_start[name])
                if any(node in line and word in line for line in log.read().decode(errors="replace").splitlines()):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout}s (see {path})")

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.config.flower_port}"

    def start_flower(self) -> None:
        """Start Flower (if ``flower_port``) and wait until it answers. Its login and RabbitMQ's
        management API come from the settings through ``flowerconfig.py``."""
        if self.config.flower_port:
            self._spawn("flower", [CELERY, "-A", "notify", "flower", f"--port={self.config.flower_port}",
                                   "--address=127.0.0.1"])
            _wait_http(self.flower_url + "/healthcheck", "flower", self.procs["flower"])

    def start(self) -> "Stack":
        """Start every child in dependency order; raises RuntimeError naming the one that failed."""
        for log in self.config.log_dir.glob("*.log"):
            log.unlink()
        # prometheus-client's multiprocess files of an earlier run (their pids may be reused).
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        try:
            self.start_sandbox()
            self.start_api()
            self.start_relay()
            pools = [(channel, pool) for channel in self.config.channels
                     for pool in range(1, self.config.pools(channel) + 1)]
            for channel, pool in pools:
                self.spawn_worker(channel, pool)
            self.start_maintenance()
            for channel, pool in pools:
                self.wait_worker(channel, pool=pool)
            self.start_flower()
        except BaseException:
            self.stop()
            raise
        return self

    def _stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        self._terminate([name], sig, timeout)

    def _terminate(self, names: list[str], sig: int = signal.SIGTERM, timeout: float = 15) -> list[str]:
        """Send ``sig`` to every named child at once, wait up to ``timeout`` seconds in all for
        them to exit, then SIGKILL each one's process group. Returns the names that had to be
        killed (still running at the deadline)."""
        procs = {name: self.procs.pop(name) for name in names if name in self.procs}
        procs = {name: proc for name, proc in procs.items() if proc.poll() is None}
        for proc in procs.values():
            try:
                # The main process only: a Celery worker then shuts down warm and lets its pool
                # finish the sends in flight (signalling the whole group would kill them mid-send).
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        killed = []
        for name, proc in procs.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(name)
        # Every group at once (what a child left behind, or the child itself past the deadline),
        # then reap them.
        for proc in procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        return killed

    def stop(self, out=None, timeout: float = 2) -> None:
        """Stop every child within about ``timeout`` seconds (plus half a second for the sandbox): SIGTERM
        to all of them at once (Celery workers finish the sends in flight), SIGKILL to what is
        still running at the deadline; the sandbox last, so sends in flight reach it.

        An idle Celery worker's warm shutdown takes 2 to 4 s (its prefork pool's join), more on a
        loaded machine; one killed mid-send is the crash the service is built for (its task
        goes back to the queue, the delivery's claim decides what happens to it).

        ``out``: called with a line naming what is being stopped, then one saying how long it
        took and what had to be killed (``print`` in ``make run``); None: silent.
        """
        started = time.monotonic()
        names = [name for name, proc in self.procs.items() if proc.poll() is None]
        if out and names:
            out(f"stopping {', '.join(names)} …")
        killed = self._terminate([n for n in names if n != "sandbox"], timeout=timeout)
        killed += self._terminate(["sandbox"], timeout=0.5)
        self.procs.clear()
        if out and names:
            out(f"stopped {len(names)} processes in {time.monotonic() - started:.1f} s"
                + (f" (killed after the deadline: {', '.join(killed)})" if killed else ""))


def _wait_http(url: str, name: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:  # answering (e.g. 401 behind a login) is ready
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout}s ({url})")

"""Start the sandbox as a subprocess and wait until it is ready (for tests and benchmarks).

    handle = start_sandbox("/tmp/sbx", 19400)
    handle.config["apns"]["url"]; handle.control.records("apns")
    handle.stop()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .client import SandboxControl

REPO_ROOT = Path(__file__).resolve().parent.parent


class SandboxHandle:
    """A running sandbox subprocess.

    Attributes:
        dir: the sandbox directory. config: parsed ``sandbox.json``. control:
        :class:`~sandbox.client.SandboxControl`. env: ``sandbox.env`` as a dict.
        process: the ``subprocess.Popen``. log_file: its stdout/stderr log.
    """

    def __init__(self, directory: Path, process: subprocess.Popen, log_file: Path) -> None:
        self.dir = directory
        self.process = process
        self.log_file = log_file
        self.config: dict[str, Any] = json.loads((directory / "sandbox.json").read_text())
        self.env: dict[str, str] = dict(
            line.split("=", 1) for line in (directory / "sandbox.env").read_text().splitlines()
            if "=" in line)
        self.control = SandboxControl(self.config["control_url"])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the sandbox and wait (SIGKILL after ``timeout`` s); returns its exit code."""
        self.control.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def __enter__(self) -> "SandboxHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_sandbox(directory: str | Path, port_base: int = 9400, timeout: float = 60.0,
                  python: str | None = None, extra_args: list[str] | None = None
                  ) -> SandboxHandle:
    """Launch ``python -m sandbox`` and return once it printed ``sandbox ready``.

    Output goes to ``<directory>/sandbox.log``.

    Raises:
        RuntimeError: the process exited or was not ready within ``timeout`` seconds (the
            message carries the end of its log).
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    log_file = directory / "sandbox.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "sandbox", "--dir", str(directory),
             "--port-base", str(port_base), *(extra_args or [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT),
            env=env)
    deadline = time.monotonic() + timeout
    while True:
        text = log_file.read_text(errors="replace")
        if "sandbox ready " in text:
            return SandboxHandle(directory, proc, log_file)
        if proc.poll() is not None:
            raise RuntimeError(f"sandbox exited with {proc.returncode}:\n{text[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(5)
            raise RuntimeError(f"sandbox not ready after {timeout}s:\n{text[-4000:]}")
        time.sleep(0.05)

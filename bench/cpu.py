"""CPU seconds per component of the stack, read from /proc (Linux), to show where a benchmark's
time goes: API, each worker pool, sandbox, PostgreSQL, RabbitMQ, Redis."""

from __future__ import annotations

import os
import subprocess

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    pids = [pid]
    for child in out:
        pids += _tree(int(child))
    return pids


def _by_name(pattern: str) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()]


def snapshot(stack) -> dict[str, float]:
    """CPU seconds used so far by each stack child (with its pool) and by the services."""
    usage = {name: sum(_cpu(p) for p in _tree(proc.pid)) for name, proc in stack.procs.items()}
    usage["postgresql"] = sum(_cpu(p) for p in _by_name("postgres"))
    usage["rabbitmq"] = sum(_cpu(p) for p in _by_name("beam.smp"))
    usage["redis"] = sum(_cpu(p) for p in _by_name("redis-server"))
    usage["bench client"] = _cpu(os.getpid())
    return usage


def report(before: dict[str, float], after: dict[str, float], per: int, unit: str) -> str:
    """Lines ``component  seconds  ms per <unit>``, largest first."""
    rows = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in after), reverse=True)
    total = sum(seconds for seconds, _ in rows)
    lines = [f"  {name:16} {seconds:7.2f} s  {seconds / per * 1000:6.2f} ms/{unit}" for seconds, name in rows if seconds > 0]
    lines.append(f"  {'total':16} {total:7.2f} s  {total / per * 1000:6.2f} ms/{unit}")
    return "\n".join(lines)

"""Resident memory of each process of a running stack (issue 14, benchmark 6), read from /proc
(Linux): the API (gunicorn master and its workers), the relay, each channel's worker pool (the
Celery main process and its prefork children), the maintenance worker and the sandbox.

RSS counts pages shared between a prefork parent and its children once per process, so the sum
over a pool overstates what the pool costs; PSS (proportional set size, from
``/proc/<pid>/smaps_rollup``) divides each shared page among the processes sharing it, so PSS
sums add up to the machine's real use. Both are printed.
"""

from __future__ import annotations

from cpu import _tree


def _kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return rss, pss


def snapshot(stack) -> dict[str, dict[str, float]]:
    """Per stack child: ``{"processes": n, "main_rss": MiB, "rss": MiB (sum, with children),
    "pss": MiB (sum, with children)}``."""
    out = {}
    for name, proc in stack.procs.items():
        pids = _tree(proc.pid)
        sizes = [_kib(pid) for pid in pids]
        out[name] = {"processes": len(pids), "main_rss": sizes[0][0] / 1024,
                     "rss": sum(r for r, _ in sizes) / 1024, "pss": sum(p for _, p in sizes) / 1024}
    return out


def report(snap: dict[str, dict[str, float]]) -> str:
    """One line per stack child, then the total: processes, main process RSS, RSS and PSS with children."""
    lines = [f"  {'process':18} {'procs':>5} {'main RSS':>10} {'RSS (all)':>11} {'PSS (all)':>11}"]
    for name, m in sorted(snap.items()):
        lines.append(f"  {name:18} {m['processes']:5d} {m['main_rss']:7.1f} MiB {m['rss']:8.1f} MiB "
                     f"{m['pss']:8.1f} MiB")
    lines.append(f"  {'total':18} {sum(m['processes'] for m in snap.values()):5d} {'':10} "
                 f"{sum(m['rss'] for m in snap.values()):8.1f} MiB {sum(m['pss'] for m in snap.values()):8.1f} MiB")
    return "\n".join(lines)

"""The parts of the benchmarks that decide what they report: bench/latency.py's paced schedule
(the daily channel mix at the offered rate) and its percentile, and bench/memory.py's reading of
a process tree's memory. The benchmarks themselves are run by hand (Makefile ``bench-*``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import latency  # noqa: E402
import memory  # noqa: E402


@pytest.mark.parametrize("single", [False, True])
def test_schedule_offers_the_daily_mix_at_the_rate(single):
    calls = latency.schedule(rate=185, duration=60, single=single)
    counts = Counter(c for _, channels in calls for c in channels)
    total = sum(counts.values())
    # 16 M a day: 10 M pushes split over three channels, 1 M SMS, 5 M emails.
    assert {c: counts[c] / total for c in counts} == pytest.approx(
        {"apns": 10 / 48, "fcm": 10 / 48, "webpush": 10 / 48, "sms": 3 / 48, "email": 15 / 48}, abs=0.002)
    assert total == pytest.approx(185 * 60, abs=5)
    assert calls[-1][0] < 60
    # Due times grow by each call's deliveries at 185/s: no burst, no gap.
    for (due, channels), (next_due, _) in zip(calls, calls[1:]):
        assert next_due - due == pytest.approx(len(channels) / 185)
    if single:
        assert all(len(channels) == 1 for _, channels in calls)
    else:
        assert len(calls) < total / 3


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert latency.percentile(values, 50) == 50
    assert latency.percentile(values, 99) == 99
    assert latency.percentile(values, 100) == 100
    assert latency.percentile([7.0], 99) == 7


class _Stack:
    """What bench/memory.py reads of a devtools Stack: its children by name."""

    def __init__(self, **procs):
        self.procs = procs


def test_memory_counts_a_process_with_its_children():
    # The child touches 64 MiB and says so once it has; sleep is a small process of its own.
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(64 << 20); "
                              "print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    small = subprocess.Popen(["sleep", "30"])
    try:
        assert child.stdout.readline().strip() == "ready"
        snap = memory.snapshot(_Stack(pool=child, single=small, tree=type("Proc", (), {"pid": os.getpid()})))
        assert snap["pool"]["processes"] == 1 and snap["pool"]["rss"] >= 64 and snap["pool"]["pss"] >= 60
        assert snap["single"]["processes"] == 1 and 0 < snap["single"]["rss"] < 64
        # This process with its two children: counted with them, over the 64 MiB of one.
        assert snap["tree"]["processes"] >= 3 and snap["tree"]["rss"] > snap["pool"]["rss"]
        lines = memory.report(snap).splitlines()
        assert [line.split()[0] for line in lines[1:]] == ["pool", "single", "tree", "total"]
    finally:
        child.kill()
        small.kill()
        child.wait()
        small.wait()

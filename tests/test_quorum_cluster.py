"""Quorum queues on a real three-node RabbitMQ cluster, with the node that leads the channel
queues crashed in the middle of a run: every delivery reaches the provider sandbox exactly once.

The module starts its own cluster (devtools.rabbitmq_cluster: three nodes on this machine, with
their own names, ports and directories, beside the machine's RabbitMQ) and then the whole stack
on it (conftest's ``stack`` with ``STACK_ENV``): the broker URL lists the three nodes, so every
client fails over to the next one, and ``NOTIFY_QUEUE_TYPE=quorum`` declares every durable queue
replicated on all three. Notifications are sent through the API at a steady pace; a third of the
way in, the leader of the channel queues (where every client is connected, as kombu tries the
first URL first) is SIGKILLed and stays down. Figures: deliveries in flight when it died and
accepted while it was down, lost, duplicated (also in ``figures.json`` in the module's log dir).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time

import pytest

from devtools import demo
from devtools.rabbitmq_cluster import RabbitCluster
from notify.models import FINAL_STATUSES, REACHED_PROVIDER, Delivery, DeliveryLog
from tests.conftest import wait_until
from tests.test_e2e import register

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

#: The cluster's ports: AMQP base+0…2, distribution base+10…12, rabbitmqctl base+20…39 (the
#: isolation letter's block of ports, clear of the sandbox, API, stages and channels tests).
PORT_BASE = int(os.environ["NOTIFY_TEST_SANDBOX_PORT_BASE"]) + 700
CLUSTER_URL = ";".join(f"amqp://guest:guest@127.0.0.1:{PORT_BASE + i}//" for i in range(3))
STACK_ENV = {
    "NOTIFY_BROKER_URL": CLUSTER_URL,
    "NOTIFY_QUEUE_TYPE": "quorum",
    # A few recipients get every notification: the per-recipient limit is not under test.
    "NOTIFY_RATE_LIMIT": "none",
    # The broker backstop (re-publish what no worker claimed) stays out of the run: a message the
    # cluster lost would show as a lost delivery here, not be quietly sent again.
    "NOTIFY_REPUBLISH_STALE_AFTER": "3600",
}

#: Two channels, two queues (and two providers' records): each notification makes one of each.
CHANNELS = {"apns": "apns", "sms": "twilio"}
NOTIFICATIONS = 240
PER_SECOND = 16.0
CRASH_AFTER = NOTIFICATIONS // 3
RECIPIENTS = 4
PROVIDER_LATENCY_MS = 250


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The three nodes, joined; killed and their directory deleted at the end, even on failure."""
    with RabbitCluster(tmp_path_factory.mktemp("rabbitmq-cluster"), PORT_BASE) as running:
        assert running.broker_url == CLUSTER_URL
        yield running


@pytest.fixture(scope="module")
def stack(cluster, stack):
    """conftest's stack on the cluster (``STACK_ENV``), started once the cluster is up and
    stopped before it is torn down."""
    return stack


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("quorum")[1]


def test_a_crashed_leader_node_loses_and_doubles_no_delivery(cluster, stack, key, control, capsys):
    # Declared by the workers (the dead-letter queues only with their first dead letter).
    queues = {q["name"]: q for q in cluster.queues()}
    for name in (*CHANNELS, "maintenance"):
        assert queues[name]["type"] == "quorum", queues[name]
        assert sorted(queues[name]["members"]) == sorted(n.name for n in cluster.nodes), queues[name]
    leader = queues["apns"]["leader"]

    users = [f"q{i}" for i in range(RECIPIENTS)]
    for i, user in enumerate(users):
        register(stack, key, control, user, phone=f"+8210555{i:05d}", platforms=("ios",))
    # Providers slower than the pace (two sends at a time per channel, a quarter second each):
    # a backlog builds on the queues, so the crash takes messages that are waiting and in flight.
    for provider in CHANNELS.values():
        control.add_fault(provider=provider, latency_ms=PROVIDER_LATENCY_MS)
    sent_ids: list[str] = []
    accepted_at: dict[str, float] = {}
    crash: dict[str, float | int] = {}

    def send(n: int) -> None:
        status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
            "recipient": users[n % RECIPIENTS], "channels": list(CHANNELS),
            "content": {"push": {"title": f"quorum {n}", "body": "b"}, "sms": {"body": f"quorum {n}"}}})
        assert status == 202, body
        assert {d["channel"] for d in body["deliveries"]} == set(CHANNELS), body
        for d in body["deliveries"]:
            accepted_at[d["id"]] = time.monotonic()
            sent_ids.append(d["id"])

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = []
        for n in range(NOTIFICATIONS):
            time.sleep(max(0.0, started + n / PER_SECOND - time.monotonic()))
            if n == CRASH_AFTER:
                concurrent.futures.wait(futures)
                in_flight = Delivery.objects.filter(id__in=list(sent_ids)).exclude(status__in=FINAL_STATUSES).count()
                on_queues = sum(q["messages"] for q in cluster.queues() if q["name"] in CHANNELS)
                crash = {"at": time.monotonic(), "in_flight": in_flight, "on_queues": on_queues}
                cluster.kill(leader)
            futures.append(pool.submit(send, n))
        for future in futures:
            future.result()
    assert len(sent_ids) == NOTIFICATIONS * len(CHANNELS)

    # A surviving node leads each queue now, the crashed one is a member that is offline.
    after = {q["name"]: q for q in cluster.queues()}
    for name in CHANNELS:
        assert after[name]["leader"] not in (leader, "", None), after[name]
        assert leader not in after[name]["online"], after[name]

    wait_until(lambda: not Delivery.objects.filter(id__in=sent_ids).exclude(status__in=FINAL_STATUSES).exists(),
               timeout=120, interval=0.5, message="every delivery to finish")
    finished = time.monotonic()
    wait_until(lambda: all(q["messages"] == 0 for q in cluster.queues() if q["name"] in CHANNELS),
               timeout=30, interval=0.5, message="the channel queues to drain")

    wire: dict[str, int] = dict.fromkeys(sent_ids, 0)
    for provider in CHANNELS.values():
        for record in control.records(provider, accepted=True):
            if record.get("delivery_id") in wire:
                wire[record["delivery_id"]] += 1
    statuses = dict(Delivery.objects.filter(id__in=sent_ids).values_list("id", "status"))
    figures = {
        "deliveries": len(sent_ids),
        "crashed_node": leader,
        "in_flight_at_crash": crash["in_flight"],
        "on_queues_at_crash": crash["on_queues"],
        "accepted_while_down": sum(1 for at in accepted_at.values() if at >= crash["at"]),
        "lost": sum(1 for count in wire.values() if count == 0),
        "duplicated": sum(1 for count in wire.values() if count > 1),
        "not_reached_provider": sum(1 for s in statuses.values() if s not in REACHED_PROVIDER),
        "lease_takeovers": DeliveryLog.objects.filter(delivery_id__in=sent_ids, reason="lease_expired").count(),
        # Tasks whose ack died with the node: RabbitMQ gave them to a worker again, whose claim
        # found their deliveries already sent or held.
        "acks_lost_redelivered": sum(path.read_text(errors="replace").count("Couldn't ack")
                                     for path in stack.config.log_dir.glob("worker-*.log")),
        "seconds_crash_to_all_final": round(finished - crash["at"], 1),
        "new_leaders": {name: after[name]["leader"] for name in CHANNELS},
    }
    (stack.config.log_dir / "figures.json").write_text(json.dumps(figures, indent=2))
    with capsys.disabled():
        print(f"\nquorum cluster: {json.dumps(figures)}")
    assert (figures["lost"], figures["duplicated"], figures["not_reached_provider"]) == (0, 0, 0), figures
    assert figures["in_flight_at_crash"] + figures["accepted_while_down"] > 0, figures

"""A RabbitMQ cluster of a few nodes started on this machine, for tests/test_quorum_cluster.py
(and anything that wants the cluster test's figures).

The nodes live beside any RabbitMQ already running here and share nothing with it but epmd (the
Erlang port mapper, which every node on a host registers with): their own node names
(``notifyq1@localhost`` …), AMQP and distribution ports, data, log and config directories and
Erlang cookie, all under one temporary directory, and no plugins (no management listener).
They are joined with ``rabbitmqctl stop_app / join_cluster / start_app``, as an operator would.

    with RabbitCluster(Path(tmp), amqp_port_base=29701) as cluster:   # 3 nodes, joined
        cluster.broker_url        # "amqp://guest:guest@127.0.0.1:29701//;…29702//;…29703//"
        cluster.queues()          # [{"name", "type", "leader", "members", "online", "messages"}]
        cluster.kill("notifyq1@localhost")

``close()`` (or leaving the ``with``) kills every process the cluster started and deletes its
directory, whatever state the nodes are in. Nothing here runs in production.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: The real scripts (``/usr/sbin/rabbitmqctl`` is a wrapper that switches to the ``rabbitmq``
#: user and its HOME, hence its cookie).
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


@dataclass
class Node:
    """One node: its Erlang name, AMQP port, distribution port and directory."""

    name: str
    amqp_port: int
    dist_port: int
    dir: Path
    launcher: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}//"

    @property
    def log(self) -> Path:
        return self.dir / "log" / f"{self.name}.log"


class RabbitCluster:
    """Start ``size`` nodes and join them into one cluster (see the module's docstring).

    Args:
        root: an empty directory for everything the nodes write; deleted by ``close()``.
        amqp_port_base: node ``i`` (1-based) listens for AMQP on ``amqp_port_base + i - 1`` and
            for Erlang distribution on ``amqp_port_base + 10 + i - 1``; ``rabbitmqctl`` takes
            its own distribution port from ``amqp_port_base + 20`` … ``+ 39``.
        prefix: node names are ``<prefix><i>@localhost``.
    Raises:
        RuntimeError: a node did not start or join within ``timeout`` seconds (its log is
            named); whatever had started is torn down first.
    """

    def __init__(self, root: Path, amqp_port_base: int, size: int = 3, prefix: str = "notifyq",
                 timeout: float = 90):
        self.root = Path(root)
        self.timeout = timeout
        self.ctl_ports = (amqp_port_base + 20, amqp_port_base + 39)
        self.nodes = [Node(f"{prefix}{i}@localhost", amqp_port_base + i - 1, amqp_port_base + 10 + i - 1,
                           self.root / f"{prefix}{i}") for i in range(1, size + 1)]
        self.killed: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "RabbitCluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start every node at once, wait for each, then join the others to the first."""
        self._write_common_files()
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            self._wait_booted(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node.name, "stop_app")
            self.ctl(node.name, "join_cluster", first.name)
            self.ctl(node.name, "start_app")
        running = self.running_nodes(first.name)
        if sorted(running) != sorted(n.name for n in self.nodes):
            raise RuntimeError(f"cluster formed with {running}, not {[n.name for n in self.nodes]}")

    def close(self) -> None:
        """SIGKILL every process the nodes started (each launcher's whole tree: the shell
        script, beam, erl_child_setup, inet_gethost), reap them, delete the directory."""
        pids = []
        for node in self.nodes:
            if node.launcher is not None:
                pids += [node.launcher.pid, *_descendants(node.launcher.pid)]
            pids += [pid for pid in [self._beam_pid(node)] if pid]
        # Deepest first, so that each parent is still there to reap its child.
        _kill_in_turn(reversed(list(dict.fromkeys(pids))))
        for node in self.nodes:
            if node.launcher is not None:
                try:
                    node.launcher.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what the test does to it ---------------------------------------------------------------
    @property
    def broker_url(self) -> str:
        """Every node's URL, ``;``-separated: kombu fails over to the next one (round robin)."""
        return ";".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.name not in self.killed]

    def kill(self, name: str) -> None:
        """Crash node ``name``: SIGKILL its Erlang VM (no goodbye to clients or peers; the
        kernel closes its sockets, so clients notice at once)."""
        node = self.node(name)
        pid = self._beam_pid(node)
        if not pid:
            raise RuntimeError(f"no pid for {name} (see {node.log})")
        # Its helpers (erl_child_setup, inet_gethost) first: orphans once beam is gone.
        _kill_in_turn([*reversed(_descendants(pid)), pid])
        self.killed.add(name)

    def queues(self, vhost: str = "/") -> list[dict]:
        """``rabbitmqctl list_queues`` asked of a node still running: per queue its ``name``,
        ``type``, ``leader`` and ``members`` (quorum queues), ``online`` members and ``messages``."""
        out = self.ctl(self.alive()[0].name, "list_queues", "-q", "-p", vhost, "--formatter", "json",
                       "name", "type", "leader", "members", "online", "messages")
        return json.loads(out or "[]")

    def running_nodes(self, asked: str) -> list[str]:
        status = json.loads(self.ctl(asked, "cluster_status", "-q", "--formatter", "json"))
        return status["running_nodes"]

    def ctl(self, node: str, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl -n <node> <args>``; its stdout. RuntimeError with its output if it fails."""
        done = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", node, *args], env=self._env(),
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stdout.strip()} {done.stderr.strip()}")
        return done.stdout

    # -- internals ------------------------------------------------------------------------------
    def _write_common_files(self) -> None:
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        cookie = self.root / "home" / ".erlang.cookie"
        cookie.write_text(os.urandom(16).hex().upper())
        cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        (self.root / "enabled_plugins").write_text("[].\n")
        # Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the machine's own node.
        (self.root / "rabbitmq-env.conf").write_text("")
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            # A busy shared /tmp must not raise the free-disk alarm (it blocks publishers).
            (node.dir / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
                "disk_free_limit.absolute = 50MB\n"
                "loopback_users.guest = true\n")

    def _env(self, node: Node | None = None) -> dict[str, str]:
        """The environment of a node's server (``node``) or of rabbitmqctl (None): the temporary
        HOME holds the shared cookie; epmd and distribution on the loopback interface only."""
        env = {
            "PATH": f"{RABBITMQ_BIN}:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.root / "home"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.ctl_ports[0]),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.ctl_ports[1]),
        }
        if node is not None:
            env.update({
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.dir / "advanced.config"),
                "RABBITMQ_MNESIA_BASE": str(node.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.dir / "log"),
                "RABBITMQ_PID_FILE": str(node.dir / "pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                # Three VMs on a small shared machine: schedulers that sleep instead of spinning.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                    "+sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}",
            })
        return env

    def _launch(self, node: Node) -> None:
        out = open(node.dir / "stdout.log", "ab")
        node.launcher = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=self._env(node), cwd=node.dir,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def _wait_booted(self, node: Node) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if node.launcher.poll() is not None:
                raise RuntimeError(f"{node.name} exited with {node.launcher.returncode} while starting: "
                                   f"{_tail(node.dir / 'stdout.log')}")
            if node.log.exists() and "Server startup complete" in node.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{node.name} not started after {self.timeout}s (see {node.log}): {_tail(node.log)}")

    def _beam_pid(self, node: Node) -> int | None:
        """The node's Erlang VM from its pid file, if that process is still this node's (a pid
        may be reused once the node is gone)."""
        try:
            pid = int((node.dir / "pid").read_text().strip())
            environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if f"RABBITMQ_NODENAME={node.name}".encode() in environ else None


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command may hold spaces and parentheses: the fields after its last ")".
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_in_turn(pids) -> None:
    """SIGKILL each of ``pids`` in order, waiting (up to 2 s) until it is gone before the next."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 2
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not written)"

"""docker-compose.yml describes the whole stack: Docker cannot run here, so its file is parsed
and every service's image, command, dependencies and health checks are checked against what
the service needs (the channels of channels.registry, their queues, the Prometheus files)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from channels import registry
from notify.queues import MAINTENANCE_QUEUE, queue_name

ROOT = Path(__file__).resolve().parent.parent
INFRASTRUCTURE = ("postgres", "rabbitmq", "redis")
#: Services built from this repository that run the service's own code (the sandbox aside).
NOTIFY_PREFIXES = ("api", "relay", "worker-", "maintenance", "scheduler", "flower", "migrate")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def argv(service: dict) -> list[str]:
    command = service.get("command")
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def option(words: list[str], name: str) -> str | None:
    """The value of ``name`` in ``words`` (``-Q apns`` or ``--port=5555``)."""
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def test_every_service_has_an_image_or_a_build_and_a_command_where_needed(services):
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
        if service.get("build"):  # this repository's image has no default command
            assert argv(service), f"{name}: built here but has no command"


def test_every_dependency_exists_and_waits_for_what_it_needs(services):
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for target, rule in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            assert target in services, f"{name} depends on {target}, which is not a service"
            assert target != name
            condition = (rule or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no check"
            if condition == "service_completed_successfully":
                assert target == "migrate"


def test_the_infrastructure_and_the_api_have_health_checks(services):
    for name in (*INFRASTRUCTURE, "sandbox", "api", "flower", "prometheus"):
        check = services[name].get("healthcheck", {})
        assert check.get("test") and check.get("interval") and check.get("retries"), f"{name}: no health check"
    assert "/health/ready" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["rabbitmq"]["image"].endswith("-management")  # Flower reads queue depths from it


def test_the_services_of_the_stack_exist(services):
    for name in ("postgres", "rabbitmq", "redis", "sandbox", "migrate", "api", "relay", "maintenance",
                 "scheduler", "flower", "prometheus"):
        assert name in services, f"no {name} service"
    assert argv(services["api"])[:2] == ["gunicorn", "notify.wsgi"]
    assert argv(services["relay"]) == ["python", "manage.py", "relay"]
    assert argv(services["migrate"])[:3] == ["python", "manage.py", "migrate"]
    assert argv(services["scheduler"])[:4] == ["celery", "-A", "notify", "beat"]
    assert argv(services["flower"])[:4] == ["celery", "-A", "notify", "flower"]
    assert argv(services["sandbox"])[:3] == ["python", "-m", "sandbox"]
    # Exactly one beat: a second would schedule every dispatcher run twice.
    beats = [n for n, s in services.items() if "beat" in argv(s) or "--beat" in argv(s) or "-B" in argv(s)]
    assert beats == ["scheduler"]


def test_one_worker_service_per_channel_on_its_queue(services):
    workers = {name: argv(s) for name, s in services.items() if argv(s)[:4] == ["celery", "-A", "notify", "worker"]}
    by_queue = {option(words, "-Q"): name for name, words in workers.items()}
    expected = {queue_name(channel) for channel in registry.channels()} | {MAINTENANCE_QUEUE}
    assert set(by_queue) == expected, workers
    assert len(by_queue) == len(workers), "two worker services consume the same queue"
    for channel in registry.channels():
        assert by_queue[queue_name(channel)] == f"worker-{channel}"
        words = workers[f"worker-{channel}"]
        assert option(words, "-n") == f"{channel}@%h" and option(words, "-c"), words


def test_notify_services_share_the_configuration_and_wait_for_the_infrastructure(services):
    for name, service in services.items():
        if not name.startswith(NOTIFY_PREFIXES):
            continue
        env = service.get("environment", {})
        assert env.get("NOTIFY_DB_HOST") == "postgres", name
        assert env.get("NOTIFY_BROKER_URL", "").startswith("amqp://guest:guest@rabbitmq:5672/"), name
        assert env.get("NOTIFY_REDIS_URL", "").startswith("redis://redis:6379/"), name
        depends = service.get("depends_on", {})
        needs = ("rabbitmq",) if name == "flower" else ("postgres",) if name == "migrate" else ("postgres", "rabbitmq")
        for target in needs:
            assert depends.get(target, {}).get("condition") == "service_healthy", f"{name} does not wait for {target}"
        if name not in ("migrate", "flower"):
            assert depends["migrate"]["condition"] == "service_completed_successfully", name


def test_flower_has_a_login_and_the_broker_api(services):
    env = services["flower"]["environment"]
    assert ":" in env["NOTIFY_FLOWER_BASIC_AUTH"]
    assert env["NOTIFY_BROKER_API_URL"] == "http://guest:guest@rabbitmq:15672/api/"
    assert (ROOT / "flowerconfig.py").is_file()  # where Flower reads both settings


def test_prometheus_gets_the_config_and_the_rules_from_the_repository(services):
    prometheus = services["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in argv(prometheus)
    mounts = {m.split(":")[1]: m.split(":")[0] for m in prometheus["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./ops/prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./ops/prometheus/alerts.yml"
    config = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    assert "alerts.yml" in config["rule_files"]
    assert (ROOT / "ops/prometheus/alerts.yml").is_file()
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert "api:8000" in targets  # the compose service name and port


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"

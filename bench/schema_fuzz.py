#!/usr/bin/env python
"""Property-based run of the OpenAPI schema against the running API (schemathesis).

    python bench/schema_fuzz.py [--max-examples 60] [--seed 1] [--workers 2]
    python bench/schema_fuzz.py --url http://127.0.0.1:8000 --key <admin-scoped key>   # a `make run`
    make fuzz

Without ``--url`` it starts the provider sandbox and the API (gunicorn) the way the tests and
``make run`` do (devtools.stack) on its own database, RabbitMQ vhost, Redis database and ports
(``NOTIFY_DB_NAME``, ``NOTIFY_BROKER_URL``, ``NOTIFY_REDIS_URL`` when set, else ``notify_fuzz``,
vhost ``notify_fuzz``, Redis db 4, API port 18400, sandbox 20100+), seeds one app with an
``admin``-scoped API key and objects for the calls to find (:func:`seed`), and stops
everything at the end. Half of the generated recipient ids, names, notification, delivery and
device ids and version numbers are then the seeded ones (a schemathesis.toml of dictionaries
written for the run, :data:`BINDINGS`), so the calls reach past the look-ups.

Then it runs ``schemathesis run`` on ``/api/v1/schema`` with every generation phase (examples,
coverage, fuzzing, stateful), authenticated with that key, and the checks
``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance`` and
``response_schema_conformance``. ``--max-examples`` is per operation: the default gives well over
1,000 requests across the schema's operations. Prints the exact command (key masked) and
schemathesis' own summary; exits with schemathesis' code (0: nothing found). Extra arguments
after ``--`` go to ``schemathesis run`` as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
SCHEMA_PATH = "/api/v1/schema?format=json"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
USER = "fuzz-user"


def _environment() -> None:
    """This run's own database, vhost and Redis database, unless the environment names them."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
    os.environ.setdefault("NOTIFY_DB_NAME", "notify_fuzz")
    os.environ.setdefault("NOTIFY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/notify_fuzz")
    os.environ.setdefault("NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/4")
    # Every generated send is accepted or refused on its merits, not by the per-recipient limit.
    os.environ.setdefault("NOTIFY_RATE_LIMIT", "1000000/hour")


def _ensure_namespace() -> None:
    """Create the database and the vhost if missing (as scripts/services.sh does for its own)."""
    from urllib.parse import urlsplit

    db = os.environ["NOTIFY_DB_NAME"]
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc"]
    if "1" not in subprocess.run(psql + [f"SELECT 1 FROM pg_database WHERE datname='{db}'"], capture_output=True,
                                 text=True, check=True).stdout:
        subprocess.run(psql + [f"CREATE DATABASE {db}"], check=True, capture_output=True)
    vhost = urlsplit(os.environ["NOTIFY_BROKER_URL"]).path.lstrip("/")
    if vhost and vhost not in subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True,
                                             check=True).stdout.split():
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True)


def seed(name: str) -> tuple[str, dict[str, list]]:
    """A new app ``name`` (each run starts from the same state) with objects for the generated calls to find: recipients ``fuzz-user-1``
    to ``-5`` with a phone, an email and an iPhone, the categories ``orders`` and ``security``,
    the templates ``order-shipped`` (the demo's) and ``welcome`` (version 1 published, 2 a
    draft), and a notification per recipient with one delivery marked sent. Returns a new
    admin-scoped key and the known values by name (see :func:`config`)."""
    import logging

    from django.utils import timezone

    from devtools import demo
    from notify import accept, scopes
    from notify.models import AppAPIKey, Category, Delivery, Device, Recipient, Template, TemplateVersion

    logging.getLogger("notify").setLevel(logging.WARNING)  # not a line per seeded send
    app, _ = demo.create_app(name)
    row, key = AppAPIKey.objects.create_key(name="fuzz admin", app=app, scopes=[scopes.ADMIN])
    for name in ("orders", "security"):
        Category.objects.get_or_create(app=app, name=name, defaults={"required": name == "security"})
    welcome, _ = Template.objects.get_or_create(app=app, name="welcome", defaults={"default_locale": "en"})
    content = {"en": {"sms": {"body": "Hi {{ name }}"}, "email": {"subject": "Hi", "text": "Hi {{ name }}"}}}
    TemplateVersion.objects.get_or_create(template=welcome, number=1,
                                          defaults={"content": content, "published_at": timezone.now()})
    TemplateVersion.objects.get_or_create(template=welcome, number=2, defaults={"content": content})
    users = [f"{USER}-{i}" for i in range(1, 6)]
    erasable = [f"{USER}-erase-{i}" for i in range(1, 6)]  # the erase operation's own: the others stay
    devices, notifications, deliveries = [], [], []
    for i, user in enumerate(users + erasable):
        recipient, _ = Recipient.objects.update_or_create(
            app=app, external_id=user, defaults={"phone": f"+49151234567{i:02d}", "email": f"{user}@example.com"})
        device, _ = Device.objects.get_or_create(app=app, platform="ios", token=f"{i:02d}" * 32,
                                                 defaults={"recipient": recipient})
        devices.append(device.id)
        body = accept.submit(app.id, row.id, {"recipient": user, "template": "welcome", "data": {"name": user},
                                              "channels": ["sms", "email"]}, None).body
        notifications.append(body["id"])
        deliveries += [d["id"] for d in body["deliveries"]]
        Delivery.objects.filter(id=body["deliveries"][0]["id"]).update(status="sent", sent_at=timezone.now())
    return key, {"recipients": users, "erasable": erasable, "names": ["order-shipped", "welcome", "orders", "security"],
                 "notifications": notifications, "deliveries": deliveries, "devices": devices,
                 "numbers": [1, 2], "templates": ["order-shipped", "welcome"]}


#: Where the known values go, and how often a generated value is replaced by one of them: the
#: other calls keep testing what an unknown id or a malformed one gets.
BINDINGS = {"path.external_id": "recipients", "path.name": "names", "path.notification_id": "notifications",
            "path.delivery_id": "deliveries", "path.device_id": "devices", "path.number": "numbers",
            "body.recipient": "recipients", "body.notifications[*].recipient": "recipients",
            "body.template": "templates", "body.notifications[*].template": "templates"}
#: ... but the erase operation names recipients of its own (``erasable``), so the others' stay.


ERASE = "/api/v1/recipients/{external_id}/erase"


def config(known: dict[str, list], path: Path) -> Path:
    """A schemathesis.toml binding :data:`BINDINGS` to the seeded values (half of the time)."""
    lines = ["# Written by bench/schema_fuzz.py for one run.", "[dictionaries]"]
    lines += [f"{name} = {{ values = {json.dumps(values)} }}" for name, values in known.items()]
    lines += ["", "[parameters]"]
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}' for key, name in BINDINGS.items()]
    # The erase operation takes ids of its own only: neither the others' nor ids seen in answers
    # (schemathesis reuses those), nor through the stateful phase's links.
    lines += ["", "[[operations]]", f'include-name = "POST {ERASE}"',
              'parameters = { "path.external_id" = { dictionary = "erasable", probability = 0.5 } }',
              "phases = { stateful = { enabled = false }, fuzzing = { extra-data-sources = { responses = false } }, "
              "coverage = { extra-data-sources = { responses = false } }, "
              "examples = { extra-data-sources = { responses = false } } }"]
    path.write_text("\n".join(lines) + "\n")
    return path


def command(base_url: str, key: str, args: argparse.Namespace, config_file: Path | None = None) -> list[str]:
    argv = [SCHEMATHESIS] + (["--config-file", str(config_file)] if config_file else []) + [
        "run", base_url + SCHEMA_PATH, "--url", base_url, "--checks", CHECKS,
        "--header", f"Authorization: Api-Key {key}", "--max-examples", str(args.max_examples),
        "--seed", str(args.seed), "--workers", str(args.workers), "--request-timeout", "30",
        "--suppress-health-check", "all", "--no-color"]
    return argv + args.extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running API's base URL (e.g. http://127.0.0.1:8000); else start one")
    parser.add_argument("--key", help="an admin-scoped API key of that API (with --url)")
    parser.add_argument("--max-examples", type=int, default=60, help="test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--port", type=int, default=18400, help="the started API's port")
    parser.add_argument("--sandbox-port-base", type=int, default=20100)
    parser.add_argument("extra", nargs="*", help="after --: more arguments for schemathesis run")
    args = parser.parse_args()
    if args.url:
        if not args.key:
            parser.error("--url needs --key (an admin-scoped API key)")
        return run(command(args.url.rstrip("/"), args.key, args), args.key)

    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    _environment()
    _ensure_namespace()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from devtools.stack import Stack, StackConfig

    call_command("migrate", verbosity=0)
    name = f"fuzz-{secrets.token_hex(3)}"
    key, known = seed(name)
    stack_config = StackConfig(env={"NOTIFY_DB_NAME": os.environ["NOTIFY_DB_NAME"]}, api_port=args.port,
                         sandbox_port_base=args.sandbox_port_base, sandbox_dir=Path(settings.NOTIFY_SANDBOX_DIR),
                         log_dir=ROOT / "var" / "fuzz-log", flower_port=None, channels=())
    for log in stack_config.log_dir.glob("*.log"):
        log.unlink()  # this run's logs only (Stack.start does the same)
    stack = Stack(stack_config)
    print(f"[{name}] starting the provider sandbox and the API on {stack.api_url} (logs: {stack_config.log_dir})",
          flush=True)
    try:
        stack.start_sandbox()
        stack.start_api()
        return run(command(stack.api_url, key, args, config(known, stack_config.log_dir / "schemathesis.toml")), key)
    finally:
        stack.stop()


def run(argv: list[str], key: str) -> int:
    shown = " ".join(shlex.quote(part) for part in argv).replace(key, "<admin key>")
    print(f"$ {shown}", flush=True)
    return subprocess.run(argv, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())

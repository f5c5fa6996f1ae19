"""``python -m devtools.run`` (``make run``): the whole system on the embedded provider sandbox,
plus a demo send. Settings: ``settings.dev`` unless DJANGO_SETTINGS_MODULE says otherwise."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import MutableMapping


def defaults(environ: MutableMapping[str, str]) -> None:
    """What ``make run`` sets unless the environment says otherwise: ``settings.dev`` and, with
    it, Django's debug mode (``DJANGO_DEBUG=1``: every settings module defaults it to off, so
    docker-compose and anything else on ``settings.dev`` runs without). The stack's children
    inherit both with the rest of this process's environment."""
    environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
    if environ["DJANGO_SETTINGS_MODULE"] == "settings.dev":
        environ.setdefault("DJANGO_DEBUG", "1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start sandbox, API, outbox relay, one worker pool per channel, "
                                                 "dispatcher and Flower; send a demo notification.")
    parser.add_argument("--port", type=int, default=8000, help="the API's port")
    parser.add_argument("--sandbox-port-base", type=int, default=9400, help="the provider sandbox's first port")
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument("--once", action="store_true", help="stop after the demo")
    parser.add_argument("--no-demo", action="store_true")
    args = parser.parse_args(argv)

    defaults(os.environ)
    import django

    django.setup()
    from django.conf import settings

    from devtools import demo
    from devtools.stack import Stack, StackConfig

    config = StackConfig(api_port=args.port, sandbox_port_base=args.sandbox_port_base, flower_port=args.flower_port,
                         sandbox_dir=Path(settings.NOTIFY_SANDBOX_DIR), log_dir=settings.VAR_DIR / "log")
    stack = Stack(config)
    print(f"starting provider sandbox, API, outbox relay, workers ({' '.join(config.channels)}), dispatcher, "
          "Flower …", flush=True)
    # SIGTERM (a background run's stop) acts as Ctrl-C, also while starting: Stack.start stops
    # what it started when interrupted.
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack.start()
    except KeyboardInterrupt:
        print("stopped while starting", flush=True)
        return
    try:
        print(f"API      {stack.api_url}/api/v1/  (docs: {stack.api_url}/api/v1/docs, {stack.api_url}/api/v1/redoc)")
        print(f"health   {stack.api_url}/health/live  {stack.api_url}/health/ready")
        print(f"admin    {stack.api_url}/admin/  "
              "(DJANGO_SETTINGS_MODULE=settings.dev .venv/bin/python manage.py createsuperuser)")
        print(f"Flower   {stack.flower_url}/  (login NOTIFY_FLOWER_BASIC_AUTH={settings.NOTIFY_FLOWER_BASIC_AUTH})")
        print(f"sandbox  {stack.control_url}/records   logs: {config.log_dir}/", flush=True)
        if not args.no_demo:
            _, key = demo.create_app()
            print(f"demo API key: {key}")
            demo.run_demo(stack.api_url, stack.control_url, key, out=lambda line: print(line, flush=True))
        if args.once:
            return
        print("running; Ctrl-C stops everything", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop(out=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main())

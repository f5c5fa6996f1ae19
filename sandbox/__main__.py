"""``python -m sandbox --dir DIR --port-base N [--host H] [--public-host P]
[--callback-hosts A,B]``: run the provider sandbox in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys

from .ports import DEFAULT_PORT_BASE, HOST, normalize_host
from .server import run


def _host_arg(text: str) -> str:
    try:
        return normalize_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _public_host_arg(text: str) -> str:
    host = _host_arg(text)
    try:
        if ipaddress.ip_address(host).is_unspecified:
            raise argparse.ArgumentTypeError(
                f"{text!r} is a wildcard address; give a name or address clients can reach")
    except ValueError:
        pass
    return host


def _host_list_arg(text: str) -> tuple[str, ...]:
    return tuple(_host_arg(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--dir", default=os.environ.get("NOTIFY_SANDBOX_DIR", "var/sandbox"),
                        help="directory for credentials, sandbox.json/env and records")
    parser.add_argument("--port-base", type=int,
                        default=int(os.environ.get("NOTIFY_SANDBOX_PORT_BASE",
                                                   DEFAULT_PORT_BASE)),
                        help="control API port; providers use the next six ports")
    parser.add_argument("--host", type=_host_arg,
                        default=os.environ.get("NOTIFY_SANDBOX_HOST") or HOST,
                        help="bind address of every port (default 127.0.0.1; 0.0.0.0 in a "
                             "container); env NOTIFY_SANDBOX_HOST")
    parser.add_argument("--public-host", type=_public_host_arg,
                        default=os.environ.get("NOTIFY_SANDBOX_PUBLIC_HOST") or HOST,
                        help="host name or IP clients use to reach the sandbox: written into "
                             "sandbox.json/sandbox.env URLs and added to the server certificate's "
                             "SANs (default 127.0.0.1); env NOTIFY_SANDBOX_PUBLIC_HOST")
    parser.add_argument("--callback-hosts", type=_host_list_arg,
                        default=os.environ.get("NOTIFY_SANDBOX_CALLBACK_HOSTS", ""),
                        help="comma-separated hosts Twilio status/inbound callbacks may be "
                             "POSTed to besides loopback (default none); env "
                             "NOTIFY_SANDBOX_CALLBACK_HOSTS")
    parser.add_argument("--callback-delay", type=float, default=0.05,
                        help="seconds before Twilio's 'sent' callback ('delivered' follows "
                             "after another 0.1 s)")
    parser.add_argument("--log-level", default=os.environ.get("NOTIFY_SANDBOX_LOG", "WARNING"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    delays = (args.callback_delay, args.callback_delay + 0.1)
    profile_to = os.environ.get("NOTIFY_SANDBOX_PROFILE")  # cProfile stats file, for perf work
    profiler = None
    if profile_to:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    try:
        return asyncio.run(run(args.dir, args.port_base, callback_delays=delays,
                               host=args.host, public_host=args.public_host,
                               callback_hosts=args.callback_hosts))
    except KeyboardInterrupt:
        return 0
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)


if __name__ == "__main__":
    sys.exit(main())

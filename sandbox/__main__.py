"""``python -m sandbox --dir DIR --port-base N``: run the provider sandbox in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .ports import DEFAULT_PORT_BASE
from .server import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--dir", default=os.environ.get("NOTIFY_SANDBOX_DIR", "var/sandbox"),
                        help="directory for credentials, sandbox.json/env and records")
    parser.add_argument("--port-base", type=int,
                        default=int(os.environ.get("NOTIFY_SANDBOX_PORT_BASE",
                                                   DEFAULT_PORT_BASE)),
                        help="control API port; providers use the next six ports")
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
        return asyncio.run(run(args.dir, args.port_base, callback_delays=delays))
    except KeyboardInterrupt:
        return 0
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)


if __name__ == "__main__":
    sys.exit(main())

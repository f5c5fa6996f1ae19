"""``manage.py rollup_analytics [--lag SECONDS]``: count what was recorded since the last rollup
into the analytics now (the maintenance worker does it every NOTIFY_ANALYTICS_INTERVAL)."""

from django.core.management.base import BaseCommand, CommandError

from notify import analytics


class Command(BaseCommand):
    help = "Count what was recorded since the last rollup into the analytics (exactly once; safe beside beat's)."

    def add_arguments(self, parser):
        parser.add_argument("--lag", type=float, default=None,
                            help="seconds a row must be old to be counted (default NOTIFY_ANALYTICS_LAG; 0: all "
                                 "that is committed)")

    def handle(self, *args, lag, **options):
        if lag is not None and lag < 0:
            raise CommandError("--lag must be 0 or more")
        done = analytics.rollup(lag)
        self.stdout.write(f"counted {done.rows} rows into {done.counts} daily counts, "
                          f"from {done.since.isoformat()} up to {done.upto.isoformat()}")
        if done.held_since is not None:
            self.stdout.write(f"held back by a transaction open since {done.held_since.isoformat()}")

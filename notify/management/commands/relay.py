"""``manage.py relay``: the outbox relay (notify.relay), one long-running process."""

from django.core.management.base import BaseCommand

from notify.outbox import Relay
from notify.providers import check_configuration


class Command(BaseCommand):
    help = "Publish committed deliveries to their channel's queue (the transactional outbox's relay)."

    def add_arguments(self, parser):
        parser.add_argument("--interval-ms", type=int, default=None,
                            help="least time between publishing rounds (default NOTIFY_RELAY_INTERVAL_MS)")

    def handle(self, *args, interval_ms, **options):
        check_configuration()
        relay = Relay(None if interval_ms is None else interval_ms / 1000)
        relay.install_signal_handlers()
        # The first round publishes whatever is waiting, so nothing committed before LISTEN is missed.
        self.stdout.write("outbox relay ready")
        self.stdout.flush()
        relay.run()

"""``manage.py maintain_history [--ahead DAYS] [--retention-days DAYS]``: create the history's day
partitions ahead and drop those past retention now (the maintenance worker's beat does it hourly)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from notify import partitions


class Command(BaseCommand):
    help = "Create the deliveries' and delivery log's day partitions ahead and drop those past retention."

    def add_arguments(self, parser):
        parser.add_argument("--ahead", type=int, default=None,
                            help="days ahead to create (default NOTIFY_HISTORY_PARTITIONS_AHEAD)")
        parser.add_argument("--retention-days", type=int, default=None,
                            help="days kept (default NOTIFY_HISTORY_RETENTION_DAYS; 0: drop nothing)")

    def handle(self, *args, ahead, retention_days, **options):
        ahead = settings.NOTIFY_HISTORY_PARTITIONS_AHEAD if ahead is None else ahead
        retention_days = settings.NOTIFY_HISTORY_RETENTION_DAYS if retention_days is None else retention_days
        if ahead < 1 or retention_days < 0:
            raise CommandError("--ahead must be 1 or more, --retention-days 0 or more")
        done = partitions.maintain(ahead=ahead, retention_days=retention_days)
        self.stdout.write(f"created {len(done.created)} partitions: {', '.join(done.created) or '-'}")
        self.stdout.write(f"dropped {len(done.dropped)} partitions: {', '.join(done.dropped) or '-'} "
                          f"({done.events} events, {done.notifications} notifications deleted)")
        if done.kept:
            self.stdout.write(f"kept past retention (unfinished deliveries): {', '.join(done.kept)}")

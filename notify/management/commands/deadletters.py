"""``manage.py deadletters list|replay``: inspect and replay each channel's dead letters."""

from django.core.management.base import BaseCommand, CommandError

from django.conf import settings

from notify import deadletters
from notify.models import Delivery, DeliveryStatus



class Command(BaseCommand):
    help = "List dead-lettered deliveries, or replay them (nothing already sent is resent)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "replay"])
        parser.add_argument("--channel", choices=settings.NOTIFY_CHANNELS)
        parser.add_argument("--id", action="append", dest="ids", help="a delivery id (repeatable)")
        parser.add_argument("--limit", type=int, default=50)

    def handle(self, *args, action, channel, ids, limit, **options):
        if action == "list":
            depths = deadletters.queue_depths()
            self.stdout.write("dead-letter queues: " + ", ".join(f"{c}.dead={n}" for c, n in depths.items()))
            rows = Delivery.objects.filter(status=DeliveryStatus.DEAD_LETTERED).order_by("-updated_at")
            if channel:
                rows = rows.filter(channel=channel)
            if ids:
                rows = rows.filter(id__in=ids)
            self.stdout.write(f"{rows.count()} dead-lettered deliveries")
            for d in rows[:limit]:
                self.stdout.write(f"{d.id} {d.channel:8} attempts={d.attempts} {d.updated_at:%Y-%m-%d %H:%M:%S} {d.reason}")
            return
        if ids is None and channel is None:
            raise CommandError("replay needs --channel or --id (replaying every channel at once is rarely meant)")
        count = deadletters.replay(ids, channel)
        drained = deadletters.drain_queue_messages([channel] if channel else list(settings.NOTIFY_CHANNELS), ids)
        self.stdout.write(f"replayed {count} deliveries; removed {drained} messages from the dead-letter queues")

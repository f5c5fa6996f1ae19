"""``manage.py rotate_credential_keys``: re-encrypt the apps' own provider settings with the first
key of NOTIFY_CREDENTIAL_KEYS (notify.credentials.reseal_all).

Rotating the key: put the new key first in NOTIFY_CREDENTIAL_KEYS and keep the old one after it,
restart every process, run this, then drop the old key and restart again. Sending never stops:
while it runs, every row opens with either key.
"""

from django.core.management.base import BaseCommand, CommandError

from notify import credentials


class Command(BaseCommand):
    help = "Re-encrypt every app's provider credentials with the first key of NOTIFY_CREDENTIAL_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=100, help="rows per transaction (default 100)")

    def handle(self, *args, batch, **options):
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        counts = credentials.reseal_all(batch, progress=lambda c: self.stdout.write(
            f"... {c['resealed']} re-encrypted, {c['current']} already current"))
        self.stdout.write(f"{counts['resealed']} re-encrypted, {counts['current']} already under the first key, "
                          f"{counts['unreadable']} unreadable")
        if counts["unreadable"]:
            raise CommandError(f"{counts['unreadable']} rows open with no key of NOTIFY_CREDENTIAL_KEYS: put their "
                               f"old key back (after the first) and run again, or set them again")

"""``manage.py create_api_key <app> [--scope NAME ...] [--name LABEL] [--expires DAYS]``: a new API
key of an app (created when it does not exist yet), printed once; only its hash is stored."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from notify import scopes as scope_list
from notify.models import App, AppAPIKey


class Command(BaseCommand):
    help = "Create an API key of an app (and the app if it is new); the key is printed once."

    def add_arguments(self, parser):
        parser.add_argument("app", help="the app's name (created when it does not exist)")
        parser.add_argument("--scope", action="append", dest="scopes", choices=list(scope_list.SCOPES),
                            help=f"a scope of the key, repeatable (default: {', '.join(scope_list.DEFAULT)})")
        parser.add_argument("--name", default="", help="a label for the key (default: '<app> key')")
        parser.add_argument("--expires", type=float, default=None, help="days until the key expires")

    def handle(self, *args, app, scopes: list[str] | None, name: str, expires: float | None, **options):
        if expires is not None and expires <= 0:
            raise CommandError("--expires must be more than 0 days")
        owner, created = App.objects.get_or_create(name=app)
        expiry = timezone.now() + dt.timedelta(days=expires) if expires is not None else None
        chosen = scopes or scope_list.default()
        try:
            _, key = AppAPIKey.objects.create_key(name=name or f"{app} key", app=owner,
                                                  scopes=chosen, expiry_date=expiry)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        if created:
            self.stderr.write(f"created app {app!r}")
        self.stderr.write(f"scopes: {', '.join(chosen)}"
                          + (f"; expires {expiry.isoformat()}" if expiry else ""))
        # The key alone on stdout, so a script can take it: KEY=$(manage.py create_api_key shop)
        self.stdout.write(key)

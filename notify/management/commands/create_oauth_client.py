"""``manage.py create_oauth_client <app> [--scope NAME ...] [--name LABEL]``: a new OAuth2 client
of an app (created when it does not exist yet) for the client credentials grant (notify.oauth);
its id and secret are printed once, only the secret's hash is stored."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from notify import oauth
from notify import scopes as scope_list
from notify.models import App


class Command(BaseCommand):
    help = "Create an OAuth2 client of an app (and the app if it is new); the secret is printed once."

    def add_arguments(self, parser):
        parser.add_argument("app", help="the app's name (created when it does not exist)")
        parser.add_argument("--scope", action="append", dest="scopes", choices=list(scope_list.SCOPES),
                            help=f"a scope of the client, repeatable (default: {', '.join(scope_list.DEFAULT)})")
        parser.add_argument("--name", default="", help="a label for the client (default: '<app> client')")

    def handle(self, *args, app, scopes: list[str] | None, name: str, **options):
        owner, created = App.objects.get_or_create(name=app)
        chosen = scopes or scope_list.default()
        try:
            client, secret = oauth.create_client(owner, chosen, name)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        if created:
            self.stderr.write(f"created app {app!r}")
        self.stderr.write(f"scopes: {', '.join(chosen)}; token endpoint: POST /oauth/token/ "
                          "(grant_type=client_credentials)")
        # Shell assignments alone on stdout, so a script can take them:
        # eval "$(manage.py create_oauth_client shop)"; echo "$client_id"
        self.stdout.write(f"client_id={client.application.client_id}")
        self.stdout.write(f"client_secret={secret}")

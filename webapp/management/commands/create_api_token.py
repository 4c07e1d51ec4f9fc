from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.api import create_token


class Command(BaseCommand):
    help = "Make an HTTP API token for a user and print it (only its hash is kept: it is shown this once)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for, e.g. training-cluster")

    def handle(self, *args: Any, **opts: Any) -> None:
        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no user {opts['username']!r}")
        if not user.is_active:
            raise CommandError(f"user {opts['username']!r} is not active")
        self.stdout.write(create_token(user, opts["name"]))

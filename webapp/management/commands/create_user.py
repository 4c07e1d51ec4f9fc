import os
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp import scheme as sch
from webapp.services.users import ROLES, UserError, create_user


class Command(BaseCommand):
    help = "Create a manager or annotator account. Prints a generated password unless --password-env is given."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--tier", default="normal", choices=sch.TIERS)
        parser.add_argument("--domains", default="", help="comma-separated expertise domains")
        parser.add_argument("--projects", default="", help="comma-separated project slugs to join")
        parser.add_argument("--email", default="")
        parser.add_argument("--password-env", default=None, help="name of an environment variable holding the password")

    def handle(self, *args: Any, **opts: Any) -> None:
        password = None
        if opts["password_env"]:
            password = os.environ.get(opts["password_env"])
            if not password:
                raise CommandError(f"--password-env: environment variable {opts['password_env']} is not set or empty")
        try:
            user, password_used = create_user(
                username=opts["username"],
                role=opts["role"],
                password=password,
                tier=opts["tier"],
                domains=[d.strip() for d in opts["domains"].split(",") if d.strip()],
                projects=[p.strip() for p in opts["projects"].split(",") if p.strip()],
                email=opts["email"],
            )
        except UserError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"created {opts['role']} {user.username}")
        if password is None:
            self.stdout.write(f"password: {password_used}")

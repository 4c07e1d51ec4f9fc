from typing import Any

from django.core.management.base import BaseCommand

from webapp.services.demo import setup_demo


class Command(BaseCommand):
    help = "Create or refresh the demo project (PandaLM data) and its demo accounts. Safe to re-run."

    def handle(self, *args: Any, **opts: Any) -> None:
        project, result, logins = setup_demo()
        self.stdout.write(
            f"demo project {project.slug}: {project.items.count()} items "
            f"({result.created} new, {result.unchanged} unchanged)"
        )
        self.stdout.write(
            "LLM judge smollm2-local (SmolLM2-135M on this CPU): Judging page of the project, or\n"
            f"  .venv/bin/python manage.py judge {project.slug} --judge smollm2-local --limit 20"
        )
        self.stdout.write("logins:")
        for username, password, role in logins:
            self.stdout.write(f"  {username:<10} {password:<20} {role}")

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.models import Item, Project
from webapp.services import gold


class Command(BaseCommand):
    help = (
        "Gold items and the qualification test of a project (docs/annotating.md): list them with each"
        " annotator's accuracy, make an item gold (set) or regular again (unset), or change the settings."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("action", choices=["list", "set", "unset", "settings"])
        parser.add_argument("external_id", nargs="?", help="set/unset: the item's external id")
        parser.add_argument(
            "--pref", action="append", default=[], metavar="ASPECT=LABEL", help="set: a gold label (repeat per aspect)"
        )
        parser.add_argument("--preferred", type=int, help="set: the preferred response instead (0 is A)")
        parser.add_argument("--qualification", action="store_true", help="set: part of the qualification test")
        parser.add_argument("--position", type=int, default=0, help="set: position in the qualification test")
        parser.add_argument("--note", default="", help="set: why this is the answer")
        parser.add_argument("--rate", type=float, help="settings: the gold rate (0..1)")
        parser.add_argument("--require-qualification", choices=["yes", "no"], help="settings")
        parser.add_argument("--pass-mark", type=float, help="settings: the qualification pass mark (0..1)")
        parser.add_argument("--pause-below", type=float, help="settings: gold accuracy to pause below; -1: never")
        parser.add_argument("--pause-min-gold", type=int, help="settings: gold answers before a pause")

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project']!r}")
        try:
            getattr(self, f"_{opts['action']}")(project, opts)
        except gold.GoldError as exc:
            raise CommandError(str(exc)) from None

    def _item(self, project: Project, opts: dict[str, Any]) -> Item:
        item = Item.objects.filter(project=project, external_id=opts["external_id"] or "").first()
        if item is None:
            raise CommandError(f"no item {opts['external_id']!r} in {project.slug}")
        return item

    def _set(self, project: Project, opts: dict[str, Any]) -> None:
        item = self._item(project, opts)
        preferences = {}
        for pair in opts["pref"]:
            aspect, sep, label = pair.partition("=")
            if not sep:
                raise CommandError(f"--pref {pair!r}: ASPECT=LABEL")
            preferences[aspect] = gold.parse_label(project, label)
        gold.set_gold(
            project,
            item,
            preferences=preferences,
            preferred=opts["preferred"],
            qualification=opts["qualification"],
            position=opts["position"],
            note=opts["note"],
        )
        self.stdout.write(f"{item.external_id} is a gold item{' (qualification)' if opts['qualification'] else ''}")

    def _unset(self, project: Project, opts: dict[str, Any]) -> None:
        item = self._item(project, opts)
        gold.unset_gold(project, item)
        self.stdout.write(f"{item.external_id} is a regular item")

    def _settings(self, project: Project, opts: dict[str, Any]) -> None:
        pause_below = project.pause_below if opts["pause_below"] is None else opts["pause_below"]
        required = opts["require_qualification"]
        project = gold.update_settings(
            project,
            gold_rate=project.gold_rate if opts["rate"] is None else opts["rate"],
            qualification_required=project.qualification_required if required is None else required == "yes",
            qualification_pass_mark=project.qualification_pass_mark if opts["pass_mark"] is None else opts["pass_mark"],
            pause_below=None if pause_below is not None and pause_below < 0 else pause_below,
            pause_min_gold=project.pause_min_gold if opts["pause_min_gold"] is None else opts["pause_min_gold"],
        )
        self._list(project, opts)

    def _list(self, project: Project, opts: dict[str, Any]) -> None:
        pause = "never" if project.pause_below is None else f"below {project.pause_below:.0%}"
        self.stdout.write(
            f"{project.slug}: gold rate {project.gold_rate:g}; qualification"
            f" {'required' if project.qualification_required else 'not required'}"
            f" (pass mark {project.qualification_pass_mark:.0%}); pause {pause}"
            f" after {project.pause_min_gold} gold answers"
        )
        for g in gold.gold_items(project):
            answer = f"preferred {g.preferred}" if g.preferred is not None else g.preferences
            test = f" qualification #{g.position}" if g.qualification else ""
            self.stdout.write(f"  {g.item.external_id}{test}: {answer} ({g.n_correct}/{g.n_answered} right)")  # type: ignore[attr-defined]
        for a in gold.project_accuracy(project):
            accuracy = "-" if a.accuracy is None else f"{a.accuracy:.0%}"
            paused = f"; paused: {a.paused_reason}" if a.paused else ""
            self.stdout.write(f"  {a.username}: {a.correct}/{a.answered} ({accuracy}); {a.qualification}{paused}")

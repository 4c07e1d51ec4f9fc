"""A project's archive: everything it holds, written out so that another instance can take it back whole.

`manage.py export_project SLUG OUT` writes it (OUT ending in .tar.gz or .tgz: a tarball, else a directory)
and `manage.py import_project ARCHIVE` reads it into an instance that has no project with that slug (an
empty one, or this one after the project was deleted; --slug imports it under another name). See
docs/operations.md ("Backups").

The archive is a directory of JSON Lines files, one per table (TABLES), and manifest.json with the format
version, the row count and sha256 of each file. Rows never hold database ids: an item is named by its
external id, a user by username, a judge by name, and a row other rows point to (a run, an assignment, an
annotation ...) by its place in its file ("_id", 1, 2, ...). Rows are written in id order, so the same
project exported from two instances gives the same files: tests compare an export, its import and the
import's export file by file.

Users are named, not copied: a missing user is created inactive with no usable password (a site admin
activates them and they reset their password); an existing one is used as it is. Judges are shared by the
projects of an instance: one with the archived name is used as it is (the import reports it when its
settings differ), a missing one is created. Not archived: import jobs (paths to uploads on the old
machine), routing jobs (the queue of a background task) and export files (the snapshots' metadata is there;
their files stay under the old instance's HYBRIDPREF_EXPORT_DIR).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, models, transaction
from django.utils import timezone

FORMAT = "hybridpref-project-archive"
VERSION = 1
BATCH = 2000


class ArchiveError(ValueError):
    """An archive that cannot be written or read as asked; the message says why."""


@dataclass(frozen=True)
class Table:
    """One file of the archive: a model's rows that belong to the project."""

    name: str  # the file is NAME.jsonl
    model: str  # in the webapp app
    scope: str  # the lookup from the model to the project ("": the model is the project)
    local_ids: bool = False  # other rows point to these by their place in the file
    skip: tuple[str, ...] = ()


# In import order: a row only points to rows of the tables above it.
TABLES = (
    Table("memberships", "Membership", "project", local_ids=True),
    Table("items", "Item", "project"),
    Table("responses", "Response", "item__project"),
    Table("assignments", "Assignment", "item__project", local_ids=True),
    Table("annotations", "HumanAnnotation", "item__project", local_ids=True),
    Table("revisions", "AnnotationRevision", "annotation__item__project"),
    Table("judge_runs", "JudgeRun", "project", local_ids=True),
    Table("judgments", "Judgment", "item__project"),
    Table("exports", "ExportSnapshot", "project", local_ids=True),
    Table("routing_runs", "RoutingRun", "project"),
    Table("routing_candidates", "RoutingCandidate", "project"),
    Table("gold_items", "GoldItem", "project"),
    Table("gold_results", "GoldResult", "project"),
    Table("qualification_attempts", "QualificationAttempt", "membership__project"),
)
PROJECT_SKIP = ("id",)
USER_FIELDS = ("username", "email", "first_name", "last_name")
JUDGE_FIELDS = (
    "backend",
    "model",
    "config",
    "price_prompt_per_m",
    "price_completion_per_m",
    "requests_per_minute",
    "tokens_per_minute",
    "active",
    "created_at",
)


def _tables() -> list[tuple[Table, type[models.Model]]]:
    """The tables whose models this code base has (an older one may lack some)."""
    out = []
    for table in TABLES:
        try:
            out.append((table, apps.get_model("webapp", table.model)))
        except LookupError:
            continue
    return out


# --- values ---------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


def _auto_times(model: type[models.Model]) -> list[str]:
    return [
        f.attname
        for f in _fields(model)
        if isinstance(f, models.DateField) and (getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False))
    ]


@dataclass
class _Names:
    """Database ids to archive names (export) and back (import)."""

    users: dict[int, str] = field(default_factory=dict)
    items: dict[int, str] = field(default_factory=dict)
    judges: dict[int, str] = field(default_factory=dict)
    local: dict[str, dict[int, int]] = field(default_factory=dict)  # model name -> {db id: local id}

    def local_id(self, model: str, pk: int) -> int:
        ids = self.local.setdefault(model, {})
        return ids.setdefault(pk, len(ids) + 1)


# --- export --------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path
    counts: dict[str, int]


def export_project(slug: str, out: Path | str) -> ExportResult:
    """Write the project's archive to `out` (a .tar.gz/.tgz file, else a directory that must not exist)."""
    from webapp.models import Project

    out = Path(out)
    tarball = out.name.endswith((".tar.gz", ".tgz"))
    if out.exists():
        raise ArchiveError(f"{out} exists; give a new path")
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise ArchiveError(f"no project {slug!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    root = staging / slug
    root.mkdir()
    try:
        counts = _write_all(project, root)
        if tarball:
            with tarfile.open(staging / "archive.tar.gz", "w:gz") as tar:
                tar.add(root, arcname=slug)
            os.replace(staging / "archive.tar.gz", out)
        else:
            os.replace(root, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out, counts)


def _write_all(project: Any, root: Path) -> dict[str, int]:
    names = _Names()
    counts: dict[str, int] = {}
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            with connection.cursor() as cursor:  # every file from one snapshot of the data
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _index_names(project, names)
        project_row = {
            f.name: _plain(f.value_from_object(project)) for f in _fields(type(project)) if f.name not in PROJECT_SKIP
        }
        _write_json(root / "project.json", project_row)
        counts["users"] = _write_rows(root / "users.jsonl", _user_rows(names))
        counts["judges"] = _write_rows(root / "judges.jsonl", _judge_rows(names))
        for table, model in _tables():
            rows = _rows(project, table, model, names)
            counts[table.name] = _write_rows(root / f"{table.name}.jsonl", rows)
    files = sorted(p.name for p in root.iterdir())
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "project": project.slug,
        "exported_at": timezone.now().isoformat(),
        "counts": counts,
        "files": {name: _sha256(root / name) for name in files},
    }
    _write_json(root / "manifest.json", manifest)
    return counts


def _index_names(project: Any, names: _Names) -> None:
    """Every user, item and judge the project's rows point to, by name."""
    from webapp.models import Item, Judge

    names.items = dict(Item.objects.filter(project=project).values_list("id", "external_id"))
    user_ids: set[int] = set()
    judge_ids: set[int] = set()
    user_model = get_user_model()
    for table, model in _tables():
        rows = model._default_manager.filter(**{table.scope: project})
        for f in _fields(model):
            if f.is_relation and f.related_model is user_model:
                user_ids.update(v for v in rows.values_list(f.attname, flat=True).distinct() if v is not None)
            elif f.is_relation and f.related_model is Judge:
                judge_ids.update(v for v in rows.values_list(f.attname, flat=True).distinct() if v is not None)
    # A jury's members, and their members' ...
    while True:
        members = set(
            Judge.members.through.objects.filter(from_judge_id__in=judge_ids).values_list("to_judge_id", flat=True)
        )
        if members <= judge_ids:
            break
        judge_ids |= members
    names.users = dict(user_model.objects.filter(pk__in=user_ids).values_list("pk", user_model.USERNAME_FIELD))
    names.judges = dict(Judge.objects.filter(pk__in=judge_ids).values_list("pk", "name"))


def _user_rows(names: _Names) -> Iterator[dict[str, Any]]:
    from webapp.models import AnnotatorProfile

    user_model = get_user_model()
    profiles = {p.user_id: p for p in AnnotatorProfile.objects.filter(user_id__in=list(names.users))}
    for user in user_model.objects.filter(pk__in=list(names.users)).order_by(user_model.USERNAME_FIELD):
        row = {name: getattr(user, name, "") for name in USER_FIELDS}
        profile = profiles.get(user.pk)
        row["profile"] = (
            {"tier": profile.tier, "domains": profile.domains, "active": profile.active} if profile else None
        )
        yield row


def _judge_rows(names: _Names) -> Iterator[dict[str, Any]]:
    from webapp.models import Judge

    for judge in Judge.objects.filter(pk__in=list(names.judges)).order_by("name").prefetch_related("members"):
        row: dict[str, Any] = {"name": judge.name}
        row.update({f: _plain(getattr(judge, f)) for f in JUDGE_FIELDS})
        row["members"] = sorted(m.name for m in judge.members.all())
        yield row


def _rows(project: Any, table: Table, model: type[models.Model], names: _Names) -> Iterator[dict[str, Any]]:
    from webapp.models import Item, Judge, Project

    user_model = get_user_model()
    fields = [f for f in _fields(model) if f.name not in table.skip]
    query = model._default_manager.filter(**{table.scope: project}).order_by("pk")
    for obj in query.iterator(chunk_size=BATCH):
        row: dict[str, Any] = {}
        if table.local_ids:
            row["_id"] = names.local_id(table.model, obj.pk)
        for f in fields:
            value = getattr(obj, f.attname)
            if not f.is_relation:
                row[f.name] = _plain(f.value_from_object(obj))
            elif f.related_model is Project:
                continue
            elif value is None:
                row[f.name] = None
            elif f.related_model is user_model:
                row[f.name] = names.users[value]
            elif f.related_model is Item:
                row[f.name] = names.items[value]
            elif f.related_model is Judge:
                row[f.name] = names.judges[value]
            else:
                target = _target(f)
                local = names.local.get(target, {}).get(value)
                if local is None:
                    raise ArchiveError(
                        f"{table.name}: {f.name} points to {target} {value}, which is not in the project"
                    )
                row[f.name] = local
        if table.model == "RoutingCandidate":
            row["human_item_ids"] = [names.items[i] for i in obj.human_item_ids if i in names.items]  # type: ignore[attr-defined]
        yield row


def _target(f: models.Field[Any, Any]) -> str:
    """The archive's name of the model a foreign key points to."""
    related: Any = f.related_model
    return _model_name(str(related._meta.model_name))


def _model_name(lower: str) -> str:
    for table in TABLES:
        if table.model.lower() == lower:
            return table.model
    return lower


def _write_rows(path: Path, rows: Iterator[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
            fh.write("\n")
            n += 1
    return n


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- import --------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    project: Any
    counts: dict[str, int]
    users_created: list[str] = field(default_factory=list)
    judges_created: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def open_archive(path: Path | str, workdir: Path) -> Path:
    """The archive's directory: `path` itself, or where its tarball was unpacked (under workdir)."""
    path = Path(path)
    if path.is_dir():
        root = path
    elif path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(workdir, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveError(f"{path}: not a readable archive ({exc})") from None
        found = [p.parent for p in workdir.rglob("manifest.json")]
        if len(found) != 1:
            raise ArchiveError(f"{path}: expected one manifest.json in the archive, found {len(found)}")
        root = found[0]
    else:
        raise ArchiveError(f"{path}: no such file or directory")
    manifest = read_manifest(root)
    for name, digest in manifest["files"].items():
        if not (root / name).is_file():
            raise ArchiveError(f"{name}: listed in the manifest but missing")
        if _sha256(root / name) != digest:
            raise ArchiveError(f"{name}: its sha256 does not match the manifest (a damaged archive)")
    return root


def read_manifest(root: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"manifest.json: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"manifest.json: not a {FORMAT}")
    if manifest.get("version") != VERSION:
        raise ArchiveError(f"manifest.json: version {manifest.get('version')!r}; this code reads version {VERSION}")
    return dict(manifest)


def import_project(path: Path | str, *, slug: str | None = None) -> ImportResult:
    """Create the archived project (under `slug` if given) with everything in the archive, in one transaction."""
    with tempfile.TemporaryDirectory(prefix="hybridpref-archive-") as workdir:
        root = open_archive(path, Path(workdir))
        with transaction.atomic():
            return _import(root, slug)


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ArchiveError(f"{path.name} line {number}: {exc}") from None


def _value(f: models.Field[Any, Any], value: Any) -> Any:
    if value is None or isinstance(f, models.JSONField):
        return value
    return f.to_python(value)


def _import(root: Path, slug: str | None) -> ImportResult:
    from webapp.models import Project

    project_row = json.loads((root / "project.json").read_text(encoding="utf-8"))
    slug = slug or project_row["slug"]
    if Project.objects.filter(slug=slug).exists():
        raise ArchiveError(f"a project {slug!r} exists here; delete it or import with another slug")
    result = ImportResult(project=None, counts={})
    user_ids = _import_users(root, result)
    judge_ids = _import_judges(root, result)
    project_fields = {f.name: f for f in _fields(Project)}
    values = {k: _value(project_fields[k], v) for k, v in project_row.items() if k in project_fields}
    values["slug"] = slug
    project = Project(**values)
    project.save(force_insert=True)
    _restore_times([project], [values], Project)
    result.project = project
    item_ids: dict[str, int] = {}
    local_ids: dict[str, dict[int, int]] = {}
    for table, model in _tables():
        n = 0
        batch: list[tuple[models.Model, dict[str, Any], int | None]] = []
        for row in _read_rows(root / f"{table.name}.jsonl"):
            batch.append(_build(model, table, row, project, user_ids, item_ids, judge_ids, local_ids))
            if len(batch) >= BATCH:
                n += _save(batch, model, table, local_ids, item_ids)
                batch = []
        n += _save(batch, model, table, local_ids, item_ids)
        result.counts[table.name] = n
    return result


def _import_users(root: Path, result: ImportResult) -> dict[str, int]:
    from webapp.models import AnnotatorProfile

    user_model = get_user_model()
    rows = list(_read_rows(root / "users.jsonl"))
    wanted = [r["username"] for r in rows]
    found = dict(
        user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": wanted}).values_list(
            user_model.USERNAME_FIELD, "pk"
        )
    )
    for row in rows:
        if row["username"] in found:
            continue
        user = user_model(**{k: row.get(k, "") for k in USER_FIELDS}, is_active=False)
        user.password = make_password(None)
        user.save()
        found[row["username"]] = user.pk
        result.users_created.append(row["username"])
        if row.get("profile"):
            AnnotatorProfile.objects.create(user=user, **row["profile"])
    result.counts["users"] = len(rows)
    return found


def _import_judges(root: Path, result: ImportResult) -> dict[str, int]:
    from webapp.models import Judge

    rows = list(_read_rows(root / "judges.jsonl"))
    judge_fields = {f.name: f for f in _fields(Judge)}
    found = {j.name: j for j in Judge.objects.filter(name__in=[r["name"] for r in rows])}
    created = []
    for row in rows:
        settings = {k: _value(judge_fields[k], row[k]) for k in JUDGE_FIELDS if k in row}
        existing = found.get(row["name"])
        if existing is not None:
            differs = [
                k
                for k in ("backend", "model", "config")
                if getattr(existing, k) != settings.get(k, getattr(existing, k))
            ]
            if differs:
                result.notes.append(f"judge {row['name']!r} exists here with other {', '.join(differs)}; used as it is")
            continue
        judge = Judge(name=row["name"], **settings)
        judge.save(force_insert=True)
        _restore_times([judge], [settings], Judge)
        found[judge.name] = judge
        created.append((judge, row))
        result.judges_created.append(judge.name)
    for judge, row in created:
        missing = [m for m in row.get("members", []) if m not in found]
        if missing:
            raise ArchiveError(f"judge {judge.name!r}: members {missing} are not in the archive")
        judge.members.set([found[m] for m in row.get("members", [])])
    result.counts["judges"] = len(rows)
    return {name: j.pk for name, j in found.items()}


def _build(
    model: type[models.Model],
    table: Table,
    row: dict[str, Any],
    project: Any,
    user_ids: dict[str, int],
    item_ids: dict[str, int],
    judge_ids: dict[str, int],
    local_ids: dict[str, dict[int, int]],
) -> tuple[models.Model, dict[str, Any], int | None]:
    from webapp.models import Item, Judge, Project

    user_model = get_user_model()
    values: dict[str, Any] = {}
    for f in _fields(model):
        if f.is_relation and f.related_model is Project:
            values[f.attname] = project.pk
            continue
        if f.name not in row:
            continue
        value = row[f.name]
        if not f.is_relation:
            values[f.attname] = _value(f, value)
        elif value is None:
            values[f.attname] = None
        else:
            try:
                if f.related_model is user_model:
                    values[f.attname] = user_ids[value]
                elif f.related_model is Item:
                    values[f.attname] = item_ids[value]
                elif f.related_model is Judge:
                    values[f.attname] = judge_ids[value]
                else:
                    target = _target(f)
                    values[f.attname] = local_ids[target][value]
            except KeyError:
                raise ArchiveError(f"{table.name}: {f.name} {value!r} is not in the archive") from None
    if table.model == "RoutingCandidate":
        try:
            values["human_item_ids"] = [item_ids[i] for i in row.get("human_item_ids", [])]
        except KeyError as exc:
            raise ArchiveError(f"{table.name}: human_item_ids names item {exc} that is not in the archive") from None
    return model(**values), values, row.get("_id")


def _save(
    batch: list[tuple[models.Model, dict[str, Any], int | None]],
    model: type[models.Model],
    table: Table,
    local_ids: dict[str, dict[int, int]],
    item_ids: dict[str, int],
) -> int:
    if not batch:
        return 0
    objs = [obj for obj, _, _ in batch]
    model._default_manager.bulk_create(objs, batch_size=BATCH)
    _restore_times(objs, [values for _, values, _ in batch], model)
    if table.local_ids:
        ids = local_ids.setdefault(table.model, {})
        for obj, _, local in batch:
            if local is not None:
                ids[int(local)] = obj.pk
    if table.model == "Item":
        item_ids.update((obj.external_id, obj.pk) for obj in objs)  # type: ignore[attr-defined]
    return len(objs)


def _restore_times(objs: list[Any], values: list[dict[str, Any]], model: type[models.Model]) -> None:
    """auto_now / auto_now_add fields were set to now on insert: put the archived times back."""
    times = [name for name in _auto_times(model) if any(name in v for v in values)]
    if not times:
        return
    for obj, given in zip(objs, values, strict=True):
        for name in times:
            if name in given:
                setattr(obj, name, given[name])
    model._default_manager.bulk_update(objs, times, batch_size=BATCH)

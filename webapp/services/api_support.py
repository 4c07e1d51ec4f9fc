"""Writes for the HTTP API that the other services do not offer as such: bulk item creation from a
request body, and project creation by an API caller, each answering every problem by row and field.

Both go through the services the rest of the platform uses (imports.import_file, projects.create_project)
so that the integrity rules are the same; this module only adds the request-shaped edges: a body read
in chunks into a temporary file, and problems as (row, field, message) instead of one message.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from webapp import scheme as sch
from webapp.importing.formats import RowProblems, check_record, parser_for
from webapp.importing.readers import ReadError, read_rows
from webapp.models import Membership, Project
from webapp.services.imports import MAX_REPORTED_ERRORS, ImportFailed, ImportResult, import_file
from webapp.services.projects import ProjectError, add_member, create_project

READ_CHUNK = 1 << 20
# What one bulk request may carry (HYBRIDPREF settings may lower it: API_MAX_BULK_BYTES).
DEFAULT_MAX_BULK_BYTES = 512 << 20
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


class Readable(Protocol):
    """A request body: a file, or the HttpRequest itself (read in chunks, never whole)."""

    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class Problem:
    """What is wrong, where: `row` names the row as in imports ("line 3", "item 2"), empty for the request."""

    field: str
    message: str
    row: str = ""


class Rejected(ValueError):
    """A request that writes nothing: `problems` (the first MAX_REPORTED_ERRORS) out of `total`."""

    def __init__(self, problems: list[Problem], total: int | None = None, status: int = 400):
        self.problems = problems
        self.total = len(problems) if total is None else total
        self.status = status
        first = problems[0] if problems else Problem("", "rejected")
        where = ": ".join(p for p in (first.row, first.field) if p)
        more = f" (and {self.total - 1} more)" if self.total > 1 else ""
        super().__init__(f"{where}: {first.message}{more}" if where else f"{first.message}{more}")


# --- items ----------------------------------------------------------------------------------------


def max_bulk_bytes() -> int:
    return int(getattr(settings, "API_MAX_BULK_BYTES", DEFAULT_MAX_BULK_BYTES))


def body_file_type(content_type: str, head: bytes) -> str:
    """jsonl for an NDJSON content type or a body that does not start with '[', else json (an array)."""
    if content_type.split(";")[0].strip().lower() in NDJSON_TYPES:
        return "jsonl"
    return "json" if head.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] == b"[" else "jsonl"


def _spool(stream: Readable, into: IO[bytes], limit: int) -> bytes:
    """Copy the body in chunks (never whole into memory); return its first bytes. Rejected (413) past `limit`."""
    head = b""
    size = 0
    while chunk := stream.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise Rejected([Problem("", f"the request body is over {limit:,} bytes; send the items in parts")], 1, 413)
        if len(head) < 64:
            head += chunk[:64]
        into.write(chunk)
    into.flush()
    return head


def check_item_rows(project: Project, path: Path, file_type: str) -> tuple[list[Problem], int, int]:
    """Every row's problems, as import_file finds them (same parser and checks): (first problems, total, rows)."""
    parse = parser_for("native", scale=project.scale, file_type=file_type)
    scheme = project.scheme()
    max_chars = settings.IMPORT_MAX_FIELD_CHARS
    problems: list[Problem] = []
    total = 0
    rows = 0
    seen: dict[str, str] = {}

    def add(where: str, found: Iterable[tuple[str, str]]) -> None:
        nonlocal total
        for field, message in found:
            total += 1
            if len(problems) < MAX_REPORTED_ERRORS:
                problems.append(Problem(field, message, where))

    for where, row in read_rows(path, file_type):
        rows += 1
        if isinstance(row, ReadError):
            add(where, [("", row.message)])
            continue
        try:
            record = parse(row)
        except RowProblems as exc:
            add(where, exc.problems)
            continue
        found = check_record(record, scheme, max_chars=max_chars)
        if record.external_id in seen:
            found.append(("id", f"duplicate id {record.external_id!r} (also at {seen[record.external_id]})"))
        else:
            seen[record.external_id] = where
        add(where, found)
    if not rows and not total:
        add("", [("", "the request holds no items")])
    return problems, total, rows


def _failed_import(exc: ImportFailed) -> Rejected:
    """An ImportFailed that the row check could not foresee (e.g. update=True on labelled items), by row and field."""
    problems = []
    for message in exc.errors:
        row, _, rest = message.partition(": ")
        field, sep, text = rest.partition(": ")
        problems.append(Problem(field, text, row) if sep else Problem("", rest, row))
    return Rejected(problems, exc.total)


def create_items(project: Project, body: Readable, *, content_type: str = "", update: bool = False) -> ImportResult:
    """Import native-format items from a request body (a JSON array or NDJSON), all or nothing.

    Every row is checked first; any problem raises Rejected (400) naming each row and field, and nothing
    is written. Then the rows go through imports.import_file, the file import's own service: the same
    integrity rules, batches, and handling of existing ids (unchanged ones skipped; changed ones rewritten
    with `update`, else reported in changed_not_updated).
    """
    with tempfile.NamedTemporaryFile(prefix="hp-api-items-", suffix=".body") as spool:
        head = _spool(body, spool, max_bulk_bytes())
        file_type = body_file_type(content_type, head)
        path = Path(spool.name)
        problems, total, _ = check_item_rows(project, path, file_type)
        if total:
            raise Rejected(problems, total)
        try:
            return import_file(project, path, fmt="native", file_type=file_type, update=update)
        except ImportFailed as exc:
            raise _failed_import(exc) from None


# --- projects -------------------------------------------------------------------------------------


def project_problems(
    *, slug: str, kind: str, scale: str, aspects: list[str], reasons: dict[str, Any], rating_attributes: list[str]
) -> list[Problem]:
    """The scheme's problems (webapp.scheme's shared validator) and the slug's, by field."""
    found = sch.validate_scheme_config(
        kind=kind, scale=scale, aspects=aspects, reasons=reasons, rating_attributes=rating_attributes
    )
    if not slug or slugify(slug) != slug:
        found.append(("slug", "not a slug (lowercase letters, digits, '-' and '_')"))
    elif Project.objects.filter(slug=slug).exists():
        found.append(("slug", f"a project {slug!r} already exists"))
    return [Problem(field, message) for field, message in found]


def create_project_for(user: Any, **fields: Any) -> Project:
    """Create a project as `user` (who may create projects: see selectors.may_create_projects).

    A creator who is not a superuser becomes the project's manager, so that they can go on to fill it.
    Raises Rejected naming each bad field; nothing is written then.
    """
    problems = project_problems(
        slug=fields["slug"],
        kind=fields["kind"],
        scale=fields["scale"],
        aspects=list(fields["aspects"]),
        reasons=dict(fields["reasons"]),
        rating_attributes=list(fields["rating_attributes"]),
    )
    if problems:
        raise Rejected(problems)
    try:
        with transaction.atomic():
            project = create_project(**fields)
            if not getattr(user, "is_superuser", False):
                add_member(project, user, Membership.MANAGER)
    except ProjectError as exc:  # what only create_project checks (a slug taken meanwhile)
        raise Rejected(
            [
                Problem(field, message) if sep else Problem("", field)
                for field, sep, message in (part.partition(": ") for part in str(exc).split("; "))
            ]
        ) from None
    return project

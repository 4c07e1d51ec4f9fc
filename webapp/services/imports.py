"""Importing items into a project: stream, validate, write in batches, all in one transaction.

A file with any invalid row imports nothing; `ImportFailed` carries the first errors, each
naming the row and the field. Re-imports skip items whose content is unchanged (by external id
and content hash); `update=True` rewrites changed ones.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from psycopg import sql

from webapp.importing.formats import FORMATS, ItemRecord, RowProblems, check_record, parser_for
from webapp.importing.readers import FileTypeError, ReadError, detect_file_type, read_rows
from webapp.models import HumanAnnotation, ImportJob, Item, Judge, Judgment, Project, Response
from webapp.services import dispatch

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 50
IMPORTED_ORDER = "combined"
IMPORTED_PROMPT_VERSION = "imported"
# A re-import into a project with at least this many items first checks the planner's statistics on them.
STATISTICS_MIN_ITEMS = 10_000


class ImportFailed(Exception):
    def __init__(self, errors: list[str], total: int):
        self.errors = errors
        self.total = total
        more = f" (showing the first {len(errors)})" if total > len(errors) else ""
        super().__init__(f"{total} problem(s){more}; nothing was imported:\n" + "\n".join(errors))


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    # Existing items whose content differs from the file, left alone without update=True.
    changed_not_updated: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged + len(self.changed_not_updated)


@dataclass(frozen=True)
class RowError:
    """One problem of a file: `where` names the row ("line 7", "row 12"), `field` the field (empty: the row)."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}" if self.field else f"{self.where}: {self.message}"


@dataclass
class _Errors:
    messages: list[str] = field(default_factory=list)
    entries: list[RowError] = field(default_factory=list)
    total: int = 0

    def add(self, where: str, field_name: str, message: str) -> None:
        self.total += 1
        if len(self.messages) < MAX_REPORTED_ERRORS:
            entry = RowError(where, field_name, message)
            self.entries.append(entry)
            self.messages.append(str(entry))


def _checked_records(
    project: Project, path: Path, fmt: str, file_type: str, errors: _Errors, seen: dict[str, str]
) -> Iterator[tuple[str, ItemRecord | None]]:
    """Every row of the file, parsed and checked as an import checks it: (where, the record or None for problems).

    Problems go to `errors`; `seen` maps each external id to the row that first had it (a later one is a duplicate).
    """
    parse = parser_for(fmt, scale=project.scale, file_type=file_type)
    scheme = project.scheme()
    max_chars = settings.IMPORT_MAX_FIELD_CHARS
    for where, row in read_rows(path, file_type):
        if isinstance(row, ReadError):
            errors.add(where, "", row.message)
            yield where, None
            continue
        try:
            record = parse(row)
        except RowProblems as exc:
            for f, m in exc.problems:
                errors.add(where, f, m)
            yield where, None
            continue
        problems = check_record(record, scheme, max_chars=max_chars)
        if record.external_id in seen:
            problems.append(("id", f"duplicate id {record.external_id!r} (also at {seen[record.external_id]})"))
        else:
            seen[record.external_id] = where
        for f, m in problems:
            errors.add(where, f, m)
        yield where, None if problems else record


def _check_arguments(path: Path, fmt: str, file_type: str | None) -> str:
    """The file type, after checking import_file's arguments; ValueError naming what is wrong."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    try:
        return detect_file_type(path, file_type)
    except FileTypeError as exc:
        raise ValueError(str(exc)) from None


def import_file(
    project: Project,
    path: Path | str,
    *,
    fmt: str = "native",
    file_type: str | None = None,
    update: bool = False,
    writer: str = "auto",
) -> ImportResult:
    """Import a file into a project. Raises ImportFailed (nothing written) or ValueError (bad arguments)."""
    path = Path(path)
    file_type = _check_arguments(path, fmt, file_type)
    use_copy = writer == "copy" or (writer == "auto" and connection.vendor == "postgresql")

    errors = _Errors()
    result = ImportResult()
    seen: dict[str, str] = {}

    def records() -> Iterator[tuple[str, ItemRecord]]:
        for where, record in _checked_records(project, path, fmt, file_type, errors, seen):
            if record is not None:
                yield where, record

    with transaction.atomic():
        # One import per project at a time: a second waits here instead of racing on ids.
        Project.objects.select_for_update().get(pk=project.pk)
        if connection.vendor == "postgresql":
            _prefer_lz4_compression()
        had_items = project.items.exists()
        if had_items and connection.vendor == "postgresql":
            _ensure_item_statistics(project)
        batch_size = settings.IMPORT_BATCH_SIZE
        for batch in _batched(records(), batch_size):
            if errors.total:
                continue  # keep reading to report every bad row, but write nothing more
            _write_batch(project, [r for _, r in batch], had_items, update, use_copy, result, seen)
        if not seen and not errors.total:
            errors.add("file", "", "the file holds no items")
        if not errors.total and result.created >= STATISTICS_MIN_ITEMS and connection.vendor == "postgresql":
            # Until autovacuum comes round, the planner would not know this project's items are there,
            # and the work queue's queries would scan them all.
            _analyze_items()
        if errors.total:
            transaction.set_rollback(True)
    if errors.total:
        raise ImportFailed(errors.messages, errors.total)
    log.info(
        "imported %s into %s: %d created, %d updated, %d unchanged, %d changed but not updated",
        path.name,
        project.slug,
        result.created,
        result.updated,
        result.unchanged,
        len(result.changed_not_updated),
    )
    return result


@dataclass
class ValidationReport:
    """What an import of a file would do, found without writing anything (see validate_file)."""

    fmt: str
    file_type: str
    rows: int = 0  # rows read, with or without problems
    rows_ok: int = 0
    rows_with_errors: int = 0
    error_total: int = 0  # problems found (a row may have several)
    errors: list[RowError] = field(default_factory=list)  # the first MAX_REPORTED_ERRORS
    # The rows without problems against the project's items (by external id and content hash):
    new: int = 0
    unchanged: int = 0
    changed: int = 0  # an import leaves these alone unless asked to update them
    responses: dict[int, int] = field(default_factory=dict)  # number of responses -> rows
    human_annotations: int = 0
    llm_annotations: int = 0

    @property
    def ok(self) -> bool:
        return self.error_total == 0

    @property
    def importable(self) -> int:
        """Items an import writes: the new ones (and the changed ones, with update)."""
        return self.new + self.changed

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k not in ("errors", "responses")},
            "errors": [[e.where, e.field, e.message] for e in self.errors],
            "responses": {str(n): count for n, count in sorted(self.responses.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["errors"] = [RowError(*e) for e in data.get("errors", [])]
        values["responses"] = {int(n): count for n, count in data.get("responses", {}).items()}
        return cls(**values)


def validate_file(
    project: Project, path: Path | str, *, fmt: str = "native", file_type: str | None = None
) -> ValidationReport:
    """Check a file as import_file would, row by row, and write nothing: the report of what an import would do.

    Every row goes through the import's own parser and checks (the same errors, naming the row and the
    field); rows without problems are compared with the project's items. Raises ValueError for bad
    arguments, as import_file does.
    """
    path = Path(path)
    file_type = _check_arguments(path, fmt, file_type)
    errors = _Errors()
    seen: dict[str, str] = {}
    report = ValidationReport(fmt=fmt, file_type=file_type)
    had_items = project.items.exists()
    rows_with_errors: set[str] = set()

    def valid() -> Iterator[tuple[str, ItemRecord]]:
        for where, record in _checked_records(project, path, fmt, file_type, errors, seen):
            report.rows += 1
            if record is None:
                rows_with_errors.add(where)
            else:
                yield where, record

    for batch in _batched(valid(), settings.IMPORT_BATCH_SIZE):
        records = [r for _, r in batch]
        existing: dict[str, str] = {}
        if had_items:
            existing = dict(
                Item.objects.filter(project=project, external_id__in=[r.external_id for r in records]).values_list(
                    "external_id", "content_hash"
                )
            )
        for record in records:
            report.rows_ok += 1
            n = len(record.responses)
            report.responses[n] = report.responses.get(n, 0) + 1
            report.human_annotations += len(record.human)
            report.llm_annotations += len(record.llm)
            if record.external_id not in existing:
                report.new += 1
            elif existing[record.external_id] == record.content_hash():
                report.unchanged += 1
            else:
                report.changed += 1
    if not report.rows and not errors.total:
        errors.add("file", "", "the file holds no items")
    report.rows_with_errors = len(rows_with_errors)  # rows, not problems: a row may have several
    report.error_total = errors.total
    report.errors = list(errors.entries)
    return report


def _batched(it: Iterable[tuple[str, ItemRecord]], size: int) -> Iterator[list[tuple[str, ItemRecord]]]:
    iterator = iter(it)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _write_batch(
    project: Project,
    batch: list[ItemRecord],
    had_items: bool,
    update: bool,
    use_copy: bool,
    result: ImportResult,
    where_of: dict[str, str],
) -> None:
    existing: dict[str, tuple[int, str]] = {}
    if had_items:
        existing = {
            ext: (pk, h)
            for pk, ext, h in Item.objects.filter(
                project=project, external_id__in=[r.external_id for r in batch]
            ).values_list("id", "external_id", "content_hash")
        }
    new = [r for r in batch if r.external_id not in existing]
    known = [r for r in batch if r.external_id in existing]
    hashes = {r.external_id: r.content_hash() for r in known}  # and the new items' below
    changed = [r for r in known if existing[r.external_id][1] != hashes[r.external_id]]
    result.unchanged += len(known) - len(changed)
    if new:
        now = timezone.now()
        if use_copy:
            # Responses first (foreign keys are checked at commit), hashing the items while they stream:
            # PostgreSQL stores the responses on one core while this process hashes on the other.
            pairs = list(zip(_next_item_ids(len(new)), new, strict=True))
            _insert_children(pairs, now, use_copy, hash_into=hashes)
            _copy_items(project, pairs, hashes, now)
        else:
            hashes.update((r.external_id, r.content_hash()) for r in new)
            objs = Item.objects.bulk_create(
                [Item(**_item_values(project, r, hashes[r.external_id])) for r in new], batch_size=500
            )
            _insert_children([(o.pk, r) for o, r in zip(objs, new, strict=True)], now, use_copy)
        result.created += len(new)
    if changed and not update:
        result.changed_not_updated.extend(r.external_id for r in changed)
    elif changed:
        _update_items(project, [(existing[r.external_id][0], r) for r in changed], hashes, use_copy, where_of)
        result.updated += len(changed)


def _item_values(project: Project, record: ItemRecord, content_hash: str) -> dict[str, Any]:
    return {
        "project_id": project.pk,
        "external_id": record.external_id,
        "prompt": record.prompt,
        "conversation": record.conversation,
        "metadata": record.metadata,
        "content_hash": content_hash,
    }


def _next_item_ids(n: int) -> list[int]:
    """Take item ids up front (PostgreSQL), so that responses can be copied in without a lookup."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [Item._meta.db_table, n],
        )
        return [row[0] for row in cursor.fetchall()]


def _copy_items(project: Project, pairs: list[tuple[int, ItemRecord]], hashes: dict[str, str], now: datetime) -> None:
    columns = [
        *("id", "project_id", "external_id", "prompt", "conversation", "metadata", "features"),
        *("route", "route_reason", "status", "content_hash", "created_at", "updated_at"),
    ]
    rows = (
        (
            pk,
            project.pk,
            r.external_id,
            r.prompt,
            None if r.conversation is None else json.dumps(r.conversation),
            json.dumps(r.metadata, default=str),
            "{}",
            Item.UNROUTED,
            "",
            Item.PENDING,
            hashes[r.external_id],
            now,
            now,
        )
        for pk, r in pairs
    )
    _copy(Item._meta.db_table, columns, rows)


def _copy(table: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """PostgreSQL COPY: several times faster than INSERT for bulk imports."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _prefer_lz4_compression() -> None:
    """Compress long values (responses of a few KB) with lz4 instead of pglz, for this transaction.

    PostgreSQL compresses a value that makes its row longer than about 2 KB. With pglz, the default,
    that took a quarter of the server's time in an import of 100,000 pairwise items (1.7 of 6.5 s).
    lz4 (PostgreSQL 14+, where the server is built with it; otherwise nothing changes) is several
    times faster; reading is the same either way.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('default_toast_compression', 'lz4', true) FROM pg_settings"
            " WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
        )


def _ensure_item_statistics(project: Project) -> None:
    """ANALYZE the items' project and external id columns where the planner's estimate of the project is far off.

    Until autovacuum gets to a bulk import, PostgreSQL has no statistics on it, takes a project of
    100,000 items for a few hundred, and looks each batch up by scanning the whole project: a
    re-import of 100,000 items took about 2 s longer. A failure here only costs that time.
    """
    items = Item.objects.filter(project=project)
    count = items.count()
    if count < STATISTICS_MIN_ITEMS:
        return
    try:
        with transaction.atomic():
            estimate = json.loads(items.explain(format="json"))[0]["Plan"]["Plan Rows"]
            if estimate < count / 10:
                _analyze_items()
    except DatabaseError:
        log.warning("could not check or update the statistics on items", exc_info=True)


def _analyze_items() -> None:
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Item._meta.db_table)
        cursor.execute(f"ANALYZE {table} (project_id, external_id, route, status)")


def _response_rows(
    pairs: list[tuple[int, ItemRecord]], hash_into: dict[str, str] | None
) -> Iterator[tuple[int, int, str, str]]:
    for pk, record in pairs:
        if hash_into is not None:
            hash_into[record.external_id] = record.content_hash()
        for position, response in enumerate(record.responses):
            yield pk, position, response.model, response.text


def _judges_by_name(names: set[str]) -> dict[str, Judge]:
    judges = {j.name: j for j in Judge.objects.filter(name__in=names)}
    for name in names - set(judges):
        # Labels that came with a dataset: the judge is on record but runs nowhere.
        judges[name] = Judge.objects.create(name=name, backend=Judge.EXTERNAL, model=name)
    return judges


def _insert_children(
    pairs: list[tuple[int, ItemRecord]], now: datetime, use_copy: bool, *, hash_into: dict[str, str] | None = None
) -> None:
    """Insert the items' responses and imported labels; with `hash_into`, hash each item on the way."""
    if use_copy:
        _copy(
            Response._meta.db_table,
            ["item_id", "position", "model_name", "text"],
            _response_rows(pairs, hash_into),
        )
    else:
        Response.objects.bulk_create(
            [
                Response(item_id=pk, position=pos, model_name=resp.model, text=resp.text)
                for pk, r in pairs
                for pos, resp in enumerate(r.responses)
            ],
            batch_size=1000,
        )
    annotations = [
        HumanAnnotation(
            item_id=pk,
            external_annotator=h.annotator,
            tier=h.tier,
            preferences=h.annotation.get("preferences") or {},
            ranking=h.annotation.get("ranking"),
            ratings={str(k): v for k, v in (h.annotation.get("ratings") or {}).items()},
            reasons=h.annotation.get("reasons") or {},
            own_reasons=h.annotation.get("own_reasons") or {},
            confidence=h.annotation.get("confidence") or {},
            justification=h.annotation.get("justification") or "",
            time_spent=h.annotation.get("time_spent"),
            flags=h.annotation.get("flags") or [],
            imported=True,
            external_timestamp=h.timestamp,
        )
        for pk, r in pairs
        for h in r.human
    ]
    if annotations:
        HumanAnnotation.objects.bulk_create(annotations, batch_size=1000)
    names = {x.judge for _, r in pairs for x in r.llm}
    if names:
        judges = _judges_by_name(names)
        Judgment.objects.bulk_create(
            [
                Judgment(
                    item_id=pk,
                    judge=judges[x.judge],
                    order=IMPORTED_ORDER,
                    prompt_version=IMPORTED_PROMPT_VERSION,
                    labels=x.labels,
                    ranking=x.ranking,
                    rationale=x.rationale,
                    raw_output=x.raw_output,
                    order_inconsistent=x.order_inconsistent,
                    status=Judgment.FAILED if x.failed else Judgment.DONE,
                    error="unparsable verdict in the source data" if x.failed else "",
                )
                for pk, r in pairs
                for x in r.llm
            ],
            batch_size=1000,
        )


def _update_items(
    project: Project,
    pairs: list[tuple[int, ItemRecord]],
    hashes: dict[str, str],
    use_copy: bool,
    where_of: dict[str, str],
) -> None:
    """Rewrite changed items: content, responses, and what the dataset itself brought (imported labels)."""
    ids = [pk for pk, _ in pairs]
    items = Item.objects.in_bulk(ids)
    current: dict[int, list[tuple[str, str]]] = {pk: [] for pk in ids}
    for item_id, model_name, text in Response.objects.filter(item_id__in=ids).values_list(
        "item_id", "model_name", "text"
    ):
        current[item_id].append((model_name, text))
    labelled = set(HumanAnnotation.objects.filter(item_id__in=ids, imported=False).values_list("item_id", flat=True))
    labelled |= set(
        Judgment.objects.filter(item_id__in=ids)
        .exclude(prompt_version=IMPORTED_PROMPT_VERSION)
        .values_list("item_id", flat=True)
    )
    # Labels made on this platform refer to the responses as they were: those must not change under them.
    clashes = [
        items[pk].external_id
        for pk, record in pairs
        if pk in labelled and current[pk] != [(r.model, r.text) for r in record.responses]
    ]
    if clashes:
        raise ImportFailed(
            [
                f"{where_of[ext]}: responses: changed, but item {ext!r} already has annotations or judgments"
                for ext in clashes
            ][:MAX_REPORTED_ERRORS],
            len(clashes),
        )
    now = timezone.now()
    for pk, record in pairs:
        item = items[pk]
        for key, value in _item_values(project, record, hashes[record.external_id]).items():
            setattr(item, key, value)
        item.updated_at = now
    Item.objects.bulk_update(list(items.values()), ["prompt", "conversation", "metadata", "content_hash", "updated_at"])
    Response.objects.filter(item_id__in=ids).delete()
    HumanAnnotation.objects.filter(item_id__in=ids, imported=True).delete()
    Judgment.objects.filter(item_id__in=ids, order=IMPORTED_ORDER, prompt_version=IMPORTED_PROMPT_VERSION).delete()
    _insert_children(pairs, timezone.now(), use_copy)


def run_import_job(job_id: int) -> ImportJob:
    """Run a queued ImportJob (the Celery task calls this). Idempotent: a finished job is left alone."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.status in (ImportJob.DONE, ImportJob.FAILED):
            return job
        job.status = ImportJob.RUNNING
        job.save(update_fields=["status"])
    try:
        result = import_file(job.project, job.path, fmt=job.file_format, update=job.update)
    except (ImportFailed, ValueError) as exc:
        job.status = ImportJob.FAILED
        job.errors = exc.errors if isinstance(exc, ImportFailed) else [str(exc)]
    else:
        job.status = ImportJob.DONE
        job.created, job.updated, job.unchanged = result.created, result.updated, result.unchanged
        job.errors = [
            f"{ext}: changed in the file; re-import with update to apply" for ext in result.changed_not_updated
        ][:MAX_REPORTED_ERRORS]
    job.finished_at = timezone.now()
    job.save()
    return job


def enqueue_import(
    project: Project, path: Path | str, *, fmt: str = "native", update: bool = False, user: Any = None
) -> ImportJob:
    """Queue an import for a Celery worker; the task is sent only once the job row is committed (where the
    broker is down, the job is kept and marked unsent: services.dispatch)."""
    job = ImportJob.objects.create(project=project, path=str(path), file_format=fmt, update=update, created_by=user)
    dispatch.send_on_commit(job)
    return job

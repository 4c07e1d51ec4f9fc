"""Importing items into a project: stream, validate, write in batches, all in one transaction.

A file with any invalid row imports nothing; `ImportFailed` carries the first errors, each
naming the row and the field. Re-imports skip items whose content is unchanged (by external id
and content hash); `update=True` rewrites changed ones.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone
from psycopg import sql
from psycopg.types.json import Jsonb

from webapp.importing.formats import FORMATS, ItemRecord
from webapp.importing.reader import (
    MAX_REPORTED_ERRORS,
    Batch,
    Errors,
    PreparedItem,
    ReaderFailed,
    ReadSettings,
    RowError,
    checked_records,
    read_batches,
    read_batches_in_process,
)
from webapp.importing.readers import FileTypeError, detect_file_type
from webapp.models import HumanAnnotation, ImportJob, Item, Judge, Judgment, Project, Response
from webapp.services import dispatch

log = logging.getLogger(__name__)

__all__ = ["MAX_REPORTED_ERRORS", "ImportFailed", "ImportResult", "RowError", "import_file", "validate_file"]
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

    errors = Errors()
    read = ReadSettings(
        path=path,
        fmt=fmt,
        file_type=file_type,
        scheme=project.scheme(),
        max_chars=settings.IMPORT_MAX_FIELD_CHARS,
        batch_size=settings.IMPORT_BATCH_SIZE,
    )
    # A large file is read by a child process while this one writes (webapp.importing.reader): only with COPY,
    # whose batches are the child's bytes as they come.
    in_child = use_copy and path.stat().st_size >= settings.IMPORT_READER_PROCESS_MIN_BYTES
    batches = (read_batches_in_process if in_child else read_batches)(read, errors)

    try:
        result = _import_batches(project, batches, errors, update=update, use_copy=use_copy)
    except ReaderFailed as exc:  # rolled back: nothing written
        raise ImportFailed([f"file: {exc}"], 1) from exc
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


def _import_batches(
    project: Project, batches: Generator[Batch, None, None], errors: Errors, *, update: bool, use_copy: bool
) -> ImportResult:
    result = ImportResult()
    with transaction.atomic(), contextlib.closing(batches):
        # One import per project at a time: a second waits here instead of racing on ids.
        Project.objects.select_for_update().get(pk=project.pk)
        if connection.vendor == "postgresql":
            _prefer_lz4_compression()
        had_items = project.items.exists()
        if had_items and connection.vendor == "postgresql":
            _ensure_item_statistics(project)
        items = 0
        for batch in batches:
            items += len(batch)
            if errors.total:
                continue  # keep reading to report every bad row, but write nothing more
            _write_batch(project, batch, had_items, update, use_copy, result)
        if not items and not errors.total:
            errors.add("file", "", "the file holds no items")
        if not errors.total and result.created >= STATISTICS_MIN_ITEMS and connection.vendor == "postgresql":
            # Until autovacuum comes round, the planner would not know this project's items are there,
            # and the work queue's queries would scan them all.
            _analyze_items()
        if errors.total:
            transaction.set_rollback(True)
    if errors.total:
        raise ImportFailed(errors.messages, errors.total)
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
    errors = Errors()
    seen: dict[str, str] = {}
    report = ValidationReport(fmt=fmt, file_type=file_type)
    had_items = project.items.exists()
    rows_with_errors: set[str] = set()

    def valid() -> Iterator[tuple[str, ItemRecord]]:
        read = ReadSettings(path, fmt, file_type, project.scheme(), settings.IMPORT_MAX_FIELD_CHARS, 0)
        for where, record in checked_records(read, errors, seen):
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
    project: Project, batch: Batch, had_items: bool, update: bool, use_copy: bool, result: ImportResult
) -> None:
    existing: dict[str, tuple[int, str]] = {}
    if had_items:
        existing = {
            ext: (pk, h)
            for pk, ext, h in Item.objects.filter(
                project=project, external_id__in=[p.external_id for _, p in batch]
            ).values_list("id", "external_id", "content_hash")
        }
    new = [p for _, p in batch if p.external_id not in existing]
    changed = [(w, p) for w, p in batch if p.external_id in existing and existing[p.external_id][1] != p.content_hash]
    result.unchanged += len(batch) - len(new) - len(changed)
    if new:
        if use_copy:
            pairs = list(zip(_next_item_ids(len(new)), new, strict=True))
            _insert_children(pairs, use_copy)  # first: foreign keys are checked at commit
            _copy_items(project, pairs, timezone.now())
        else:
            objs = Item.objects.bulk_create([Item(**_item_values(project, p)) for p in new], batch_size=500)
            _insert_children([(o.pk, p) for o, p in zip(objs, new, strict=True)], use_copy)
        result.created += len(new)
    if changed and not update:
        result.changed_not_updated.extend(p.external_id for _, p in changed)
    elif changed:
        _update_items(project, [(existing[p.external_id][0], w, p) for w, p in changed], use_copy)
        result.updated += len(changed)


def _item_values(project: Project, item: PreparedItem) -> dict[str, Any]:
    return {
        "project_id": project.pk,
        "external_id": item.external_id,
        "prompt": item.prompt.decode(),
        "conversation": item.conversation,
        "metadata": json.loads(item.metadata_json),
        "content_hash": item.content_hash,
    }


def _next_item_ids(n: int) -> list[int]:
    """Take item ids up front (PostgreSQL), so that responses can be copied in without a lookup."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [Item._meta.db_table, n],
        )
        return [row[0] for row in cursor.fetchall()]


def _copy_items(project: Project, pairs: list[tuple[int, PreparedItem]], now: datetime) -> None:
    columns = [
        *("id", "project_id", "external_id", "prompt", "conversation", "metadata", "features"),
        *("route", "route_reason", "status", "content_hash", "created_at", "updated_at"),
    ]
    no_features = Jsonb({})
    rows = (
        (
            pk,
            project.pk,
            r.external_id,
            r.prompt,
            None if r.conversation is None else Jsonb(r.conversation),
            Jsonb(r.metadata_json, dumps=str),  # JSON already
            no_features,
            Item.UNROUTED,
            "",
            Item.PENDING,
            r.content_hash,
            now,
            now,
        )
        for pk, r in pairs
    )
    _copy(Item, columns, rows, utf8=("prompt",))


def _copy(
    model: type[models.Model], columns: list[str], rows: Iterable[tuple[Any, ...]], *, utf8: tuple[str, ...] = ()
) -> None:
    """PostgreSQL COPY: several times faster than INSERT for bulk imports.

    In COPY's binary format, where a text is its UTF-8 bytes after their length: the text format's escaping
    cost this process 4.6 µs a response of 2 KB, the binary format 0.6 µs. Binary values must have the
    columns' exact types, so those come from the model's fields (a JSON column takes a psycopg Jsonb).
    The text columns named in `utf8` take bytes, the UTF-8 that the content hash encoded: a text and a
    bytea are both their bytes in this format, so they go as bytea, without a second encoding; the server
    still checks them as text (valid UTF-8, no NUL).
    """
    names = [sql.Identifier(c) for c in columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(model._meta.db_table), sql.SQL(", ").join(names)
    )
    # varchar(255) -> varchar
    types = ["bytea" if c in utf8 else str(_field(model, c).db_type(connection)).split("(")[0] for c in columns]
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _field(model: type[models.Model], column: str) -> models.Field[Any, Any]:
    found = model._meta.get_field(column)  # a column name is also a field's attname
    if not isinstance(found, models.Field):
        raise TypeError(f"{model.__name__}.{column} is not a column")
    return found


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


def _judges_by_name(names: set[str]) -> dict[str, Judge]:
    judges = {j.name: j for j in Judge.objects.filter(name__in=names)}
    for name in names - set(judges):
        # Labels that came with a dataset: the judge is on record but runs nowhere.
        judges[name] = Judge.objects.create(name=name, backend=Judge.EXTERNAL, model=name)
    return judges


def _insert_children(pairs: list[tuple[int, PreparedItem]], use_copy: bool) -> None:
    """Insert the items' responses and imported labels."""
    if use_copy:
        _copy(
            Response,
            ["item_id", "position", "model_name", "text"],
            ((pk, pos, model, text) for pk, p in pairs for pos, (model, text) in enumerate(p.responses)),
            utf8=("text",),
        )
    else:
        Response.objects.bulk_create(
            [
                Response(item_id=pk, position=pos, model_name=model, text=text.decode())
                for pk, p in pairs
                for pos, (model, text) in enumerate(p.responses)
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


def _update_items(project: Project, changed: list[tuple[int, str, PreparedItem]], use_copy: bool) -> None:
    """Rewrite changed items: content, responses, and what the dataset itself brought (imported labels)."""
    ids = [pk for pk, _, _ in changed]
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
        f"{where}: responses: changed, but item {p.external_id!r} already has annotations or judgments"
        for pk, where, p in changed
        if pk in labelled and current[pk] != [(model, text.decode()) for model, text in p.responses]
    ]
    if clashes:
        raise ImportFailed(clashes[:MAX_REPORTED_ERRORS], len(clashes))
    now = timezone.now()
    for pk, _, p in changed:
        item = items[pk]
        for key, value in _item_values(project, p).items():
            setattr(item, key, value)
        item.updated_at = now
    Item.objects.bulk_update(list(items.values()), ["prompt", "conversation", "metadata", "content_hash", "updated_at"])
    Response.objects.filter(item_id__in=ids).delete()
    HumanAnnotation.objects.filter(item_id__in=ids, imported=True).delete()
    Judgment.objects.filter(item_id__in=ids, order=IMPORTED_ORDER, prompt_version=IMPORTED_PROMPT_VERSION).delete()
    _insert_children([(pk, p) for pk, _, p in changed], use_copy)


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

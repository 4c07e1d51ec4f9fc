"""Dataset exports: versioned snapshots written from the database by the pure exporters.

Items stream out of the database in one consistent snapshot (REPEATABLE READ on PostgreSQL): four
queries ordered by item id (items, responses, human annotations, combined AI verdicts) run on
server-side cursors and are merged item by item, so memory stays flat whatever the project's size.
Files are written into a hidden sibling directory and renamed into place only when complete; on any
error the directory is removed and the snapshot is marked failed with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from webapp.exporting import formats as fmt
from webapp.exporting.records import AILabel, ExportItem, ExportResponse, HumanLabel
from webapp.exporting.writers import (
    JsonlWriter,
    ParquetWriter,
    dataset_card,
    paused_gc,
    sha256_file,
    write_hf_dataset,
)
from webapp.models import ExportSnapshot, Project
from webapp.readahead import read_ahead
from webapp.services import dispatch

FILE_TYPES = ExportSnapshot.FILE_TYPES
FETCH = 2000
# The options an export takes, with their defaults (fmt.ExportOptions has the checks).
OPTION_KEYS = (
    "rule",
    "ai_judge",
    "aspect",
    "seed",
    "test_fraction",
    "conversational",
    "ties",
    "with_margin",
    "label_source",
)


class ExportFailed(ValueError):
    """An export that cannot be made as asked; the message says why."""


# --- reading --------------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    """A packed row's JSON: text from the database (Django has psycopg load jsonb as text), decoded once.
    What it holds is decoded with it: its parts need no second decode."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


# A timestamptz as datetime.isoformat() writes it in UTC: "2024-05-01T10:00:00.123400+00:00", without the
# fraction where it is zero.
_PG_ISO = (
    "to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN date_trunc('second', {column}) = {column} THEN ''"
    " ELSE to_char({column} AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)

_HUMAN_JSON = ("preferences", "ranking", "ratings", "reasons", "own_reasons", "confidence", "flags")


def _queries(vendor: str, routes: list[str] | None) -> dict[str, str]:
    """The four ordered queries. Only constants are formatted in; values are always parameters."""
    pg = vendor == "postgresql"

    # Several JSON columns in one value: one JSON decode per row instead of one per column.
    def pack(*columns: str) -> str:
        if pg:
            return f"jsonb_build_array({', '.join(columns)})"
        return f"json_array({', '.join(f'json({c})' for c in columns)})"

    route_sql = ""
    if routes:
        route_sql = " AND i.route = ANY(%s)" if pg else " AND i.route IN (SELECT value FROM json_each(%s))"
    # Gold items (services/gold.py) are never exported: they are tests of the annotators, not data.
    not_gold = " AND NOT EXISTS (SELECT 1 FROM webapp_golditem g WHERE g.item_id = i.id)"
    where = f"WHERE i.project_id = %s{route_sql}{not_gold}"
    humans_json = pack(*(f"h.{c}" for c in _HUMAN_JSON))
    # PostgreSQL writes created_at as the text _iso makes of it: loading a million timestamps into
    # datetimes and formatting them again took about a sixth of the export's CPU (cProfile).
    created = _PG_ISO.format(column="h.created_at") if pg else "h.created_at"
    return {
        "items": (
            f"SELECT i.id, i.external_id, i.prompt, {pack('i.conversation', 'i.metadata')}, i.route"  # noqa: S608
            f" FROM webapp_item i {where} ORDER BY i.id"
        ),
        "responses": (
            "SELECT r.item_id, r.position, r.text, r.model_name FROM webapp_response r"  # noqa: S608
            f" JOIN webapp_item i ON i.id = r.item_id {where} ORDER BY r.item_id, r.position"
        ),
        "humans": (
            f"SELECT h.item_id, COALESCE(u.username, h.external_annotator), h.tier, {humans_json},"  # noqa: S608
            f" h.justification, h.time_spent, h.external_timestamp, {created} FROM webapp_humanannotation h"
            " LEFT JOIN auth_user u ON u.id = h.annotator_id"
            f" JOIN webapp_item i ON i.id = h.item_id {where} ORDER BY h.item_id, h.created_at, h.id"
        ),
        "ais": (
            f"SELECT j.item_id, g.name, j.prompt_version, {pack('j.labels', 'j.ranking')}, j.rationale,"  # noqa: S608
            " j.order_inconsistent FROM webapp_judgment j JOIN webapp_judge g ON g.id = j.judge_id"
            f" JOIN webapp_item i ON i.id = j.item_id {where}"
            " AND j.status = 'done' AND j.\"order\" = 'combined' ORDER BY j.item_id, j.created_at DESC, j.id DESC"
        ),
    }


def _cursor_rows(name: str, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
    if connection.vendor == "postgresql":
        # A server-side cursor: rows come in FETCH at a time, never the whole result.
        raw = connection.connection
        with raw.cursor(name=f"export_{name}") as cursor:
            cursor.execute(sql, params)
            # The next batch is fetched by a thread while the caller works on this one: without it the export
            # waited for PostgreSQL at every FETCH (1.7 of 5.5 s on 50,000 items). A psycopg connection may be
            # shared by threads (it serializes their commands); each cursor here is used by one thread only.
            # Closed explicitly, so that the thread has stopped before the cursor closes.
            batches = read_ahead(iter(functools.partial(cursor.fetchmany, FETCH), []), name="export-fetch")
            with contextlib.closing(batches):
                for rows in batches:
                    yield from rows
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(FETCH):
                yield from rows


class _Children:
    """Rows of one child query, handed out item by item (both streams are ordered by item id)."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]):
        self._rows = rows
        self._next: tuple[Any, ...] | None = next(rows, None)

    def take(self, item_id: int) -> list[tuple[Any, ...]]:
        out = []
        while self._next is not None and self._next[0] <= item_id:
            if self._next[0] == item_id:
                out.append(self._next)
            self._next = next(self._rows, None)
        return out


def stream_items(
    project: Project, *, routes: list[str] | None = None, human_ids: set[int] | None = None
) -> Iterator[ExportItem]:
    """The project's items with their responses, human labels and combined AI labels, by id.

    Call inside a transaction (export_snapshot does, REPEATABLE READ on PostgreSQL) so the four
    queries see one snapshot of the data. human_ids: a routing candidate's human items; every item
    is then routed as the candidate says (human, else AI) instead of as stored.
    """
    queries = _queries(connection.vendor, routes)
    route_param: list[Any] = []
    if routes:
        route_param = [json.dumps(routes)] if connection.vendor == "sqlite" else [routes]
    params = [project.pk, *route_param]
    responses = _Children(_cursor_rows("responses", queries["responses"], params))
    humans = _Children(_cursor_rows("humans", queries["humans"], params))
    ais = _Children(_cursor_rows("ais", queries["ais"], params))
    for item_id, external_id, prompt, packed, route in _cursor_rows("items", queries["items"], params):
        conversation, metadata = _json(packed)
        yield ExportItem(
            item_id=item_id,
            external_id=external_id,
            prompt=prompt,
            conversation=conversation,
            metadata=metadata or {},
            route=route if human_ids is None else ("human" if item_id in human_ids else "ai"),
            responses=tuple(ExportResponse(position=p, text=t, model=m) for _, p, t, m in responses.take(item_id)),
            humans=tuple(_human(row) for row in humans.take(item_id)),
            ais=tuple(_ai(row) for row in ais.take(item_id)),
        )


def _human(row: tuple[Any, ...]) -> HumanLabel:
    _, annotator, tier, packed, justification, time_spent, external_ts, created = row
    preferences, ranking, ratings, reasons, own_reasons, confidence, flags = _json(packed)
    return HumanLabel(
        annotator=annotator or "",
        tier=tier,
        preferences=preferences or {},
        ranking=ranking,
        ratings={int(k): v for k, v in (ratings or {}).items()},
        reasons=reasons or {},
        own_reasons=own_reasons or {},
        confidence=confidence or {},
        justification=justification,
        time_spent=time_spent,
        timestamp=external_ts or _iso(created),
        flags=flags or [],
    )


def _ai(row: tuple[Any, ...]) -> AILabel:
    _, judge, prompt_version, packed, rationale, inconsistent = row
    labels, ranking = _json(packed)
    return AILabel(
        judge=judge,
        prompt_version=prompt_version,
        labels=labels or {},
        ranking=ranking,
        rationale=rationale,
        order_inconsistent=None if inconsistent is None else bool(inconsistent),
    )


# --- writing --------------------------------------------------------------------------------------


def code_version() -> str:
    """The platform's version, and the git commit where there is one."""
    text = f"hybridpref {package_version('hybridpref')}"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent.parent.parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return text
    return f"{text} (git {commit})" if commit else text


def export_options(format: str, options: dict[str, Any]) -> fmt.ExportOptions:
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise ExportFailed(f"unknown option(s): {', '.join(sorted(unknown))} (known: {', '.join(OPTION_KEYS)})")
    try:
        return fmt.ExportOptions(format=format, **options)
    except (fmt.ExportError, TypeError) as exc:
        raise ExportFailed(str(exc)) from None


def default_out_dir(project: Project, version: int, format: str) -> Path:
    return Path(settings.EXPORT_DIR) / project.slug / f"v{version:04d}-{format}"


def create_snapshot(
    project: Project,
    *,
    format: str,
    file_type: str = "jsonl",
    options: dict[str, Any] | None = None,
    routes: list[str] | None = None,
    user: Any = None,
    out: str | Path | None = None,
    candidate: int | None = None,
) -> ExportSnapshot:
    """Check the request and record a running snapshot (with its version); nothing is written yet."""
    options = dict(options or {})
    parsed = export_options(format, options)
    if file_type not in FILE_TYPES:
        raise ExportFailed(f"unknown file type {file_type!r} (use {', '.join(FILE_TYPES)})")
    scheme = project.scheme()
    if format in fmt.PAIRWISE_ONLY and scheme.kind != "pairwise":
        raise ExportFailed(f"{format} holds pairwise comparisons; {project.slug} is a {scheme.kind} project")
    if parsed.aspect not in scheme.aspects and format != fmt.MULTIPREF:
        raise ExportFailed(f"aspect {parsed.aspect!r} is not one of the project's ({', '.join(scheme.aspects)})")
    if not project.items.exists():
        raise ExportFailed(f"project {project.slug} has no items to export")
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        version = (project.exports.aggregate(v=Max("version"))["v"] or 0) + 1
        target = Path(out) if out else default_out_dir(project, version, format)
        _check_target(target)
        return ExportSnapshot.objects.create(
            project=project,
            version=version,
            created_by=user if getattr(user, "pk", None) else None,
            format=format,
            file_type=file_type,
            options={**asdict(parsed), "routes": routes or [], **({"candidate": candidate} if candidate else {})},
            path=str(target.resolve()),
            code_version=code_version(),
        )


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportFailed(f"{target} exists and is not an empty directory")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ExportFailed(f"cannot write to {target}: {parent} is not a writable directory")


def run_snapshot(snapshot_id: int) -> ExportSnapshot:
    """Write a recorded snapshot's files. Safe to call again: a finished snapshot is left as it is."""
    snapshot = ExportSnapshot.objects.select_related("project").get(pk=snapshot_id)
    if snapshot.status != ExportSnapshot.RUNNING:
        return snapshot
    target = Path(snapshot.path)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    try:
        _check_target(target)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        summary = _write(snapshot, staging)
        if summary.rows == 0:
            raise ExportFailed(
                f"no item of {snapshot.project.slug} has a label for this export"
                f" (label source {snapshot.options.get('label_source')}, aspect {snapshot.options.get('aspect')})"
            )
        files = _finish(snapshot, staging, summary)
        if target.exists():
            target.rmdir()  # empty, checked above
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        message = str(exc) if isinstance(exc, ExportFailed | OSError) else f"{type(exc).__name__}: {exc}"
        ExportSnapshot.objects.filter(pk=snapshot.pk).update(
            status=ExportSnapshot.FAILED, error=message, finished_at=timezone.now()
        )
        snapshot.refresh_from_db()
        if isinstance(exc, ExportFailed | OSError):
            return snapshot
        raise
    ExportSnapshot.objects.filter(pk=snapshot.pk).update(
        status=ExportSnapshot.DONE,
        files=files,
        row_count=summary.rows,
        item_count=summary.items,
        counts={
            "splits": fmt.counts_by(summary.splits),
            "sources": fmt.counts_by(summary.sources),
            "unlabelled": summary.unlabelled,
        },
        finished_at=timezone.now(),
    )
    snapshot.refresh_from_db()
    return snapshot


def _write(snapshot: ExportSnapshot, staging: Path) -> fmt.ExportSummary:
    project = snapshot.project
    options = {k: snapshot.options[k] for k in OPTION_KEYS if k in snapshot.options}
    parsed = export_options(snapshot.format, options)
    schema = fmt.schema_for(parsed)
    summary = fmt.ExportSummary()
    outermost = not connection.in_atomic_block
    # Rows are acyclic and freed by reference counting; the cyclic GC only rescans them (see paused_gc).
    with paused_gc(), transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            # One snapshot of the data for all four streams.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        human_ids = None
        if snapshot.options.get("candidate"):
            from webapp.models import RoutingCandidate

            candidate = RoutingCandidate.objects.get(pk=snapshot.options["candidate"])
            human_ids = set(candidate.human_item_ids)
        items = stream_items(project, routes=snapshot.options.get("routes") or None, human_ids=human_ids)
        rows = fmt.export_rows(items, parsed, project.scheme(), summary)
        if snapshot.file_type == "jsonl":
            with JsonlWriter(staging / f"{snapshot.format}.jsonl") as writer:
                writer.write_rows(rows)
        elif snapshot.file_type == "parquet":
            with ParquetWriter(staging / f"{snapshot.format}.parquet", schema) as pq:
                pq.write_rows(rows)
        else:
            write_hf_dataset(rows, schema, staging / "hf", description=f"{project.name}: {snapshot.format}")
    return summary


def _finish(snapshot: ExportSnapshot, staging: Path, summary: fmt.ExportSummary) -> list[dict[str, Any]]:
    data_files = sorted(p for p in staging.rglob("*") if p.is_file())
    checksums = {str(p.relative_to(staging)): sha256_file(p) for p in data_files}
    card = dataset_card(
        name=f"{snapshot.project.name} v{snapshot.version} ({snapshot.format})",
        format=snapshot.format,
        rows=summary.rows,
        items=summary.items,
        splits=summary.splits,
        sources=summary.sources,
        license=str(snapshot.options.get("license") or settings.EXPORT_LICENSE),
        agreement=summary.agreement,
        options={k: v for k, v in snapshot.options.items() if k != "routes"},
        filters={"routes": snapshot.options.get("routes") or "all"},
        code_version=snapshot.code_version,
        created=snapshot.created_at.isoformat(),
        files=checksums,
    )
    (staging / "README.md").write_text(card, encoding="utf-8")
    out = []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        name = str(path.relative_to(staging))
        out.append({"name": name, "bytes": path.stat().st_size, "sha256": checksums.get(name) or sha256_file(path)})
    return out


def export_now(project: Project, **kwargs: Any) -> ExportSnapshot:
    """Record and write a snapshot in this process (the command line)."""
    snapshot = create_snapshot(project, **kwargs)
    return run_snapshot(snapshot.pk)


def enqueue_export(project: Project, **kwargs: Any) -> ExportSnapshot:
    """Record a snapshot and let a Celery worker write it once the record is committed (where the broker is
    down, the snapshot is kept and marked unsent: services.dispatch)."""
    snapshot = create_snapshot(project, **kwargs)
    dispatch.send_on_commit(snapshot)
    return snapshot


def snapshot_file(snapshot: ExportSnapshot, name: str) -> Path:
    """A file of a finished snapshot, by its recorded name (never a path the caller makes up)."""
    if snapshot.status != ExportSnapshot.DONE or name not in {f["name"] for f in snapshot.files}:
        raise FileNotFoundError(name)
    root = Path(snapshot.path).resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        raise FileNotFoundError(name)
    return path

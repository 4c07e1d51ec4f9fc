"""Uploads in the manager console: stage a file, validate it without writing, then import it on a worker.

A staged upload is a directory under UPLOAD_DIR/staging named by a random token: the file (`upload.<ext>`)
and `meta.json` (who sent what, in which format, and the validation report). The import of a staged file
is an ordinary ImportJob (services.imports.enqueue_import), run by a Celery worker; a file whose report
has errors is refused. Staged uploads older than STAGED_MAX_AGE_S are removed when a new one comes in,
unless an import of theirs is still queued or running.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.utils import timezone

from webapp.importing.formats import FORMATS
from webapp.models import ImportJob, Project
from webapp.services.imports import ValidationReport, enqueue_import, validate_file

# What a console upload may be: JSONL, CSV or Parquet, by extension and by content.
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
STAGED_MAX_AGE_S = 24 * 3600
SNIFF_BYTES = 64 * 1024
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_BINARY_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (or an Excel/Office file)",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
    b"PAR1": "a Parquet file",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\xff\xfe": "UTF-16 text: save it as UTF-8",
    b"\xfe\xff": "UTF-16 text: save it as UTF-8",
}


class UploadError(ValueError):
    """An upload refused before any row was read: `field` names the form field, `status` the HTTP status."""

    def __init__(self, field: str, message: str, status: int = 400):
        self.field = field
        self.status = status
        super().__init__(message)


@dataclass
class StagedUpload:
    token: str
    path: Path
    meta: dict[str, Any]

    @property
    def report(self) -> ValidationReport:
        return ValidationReport.from_dict(self.meta["report"])

    @property
    def job_id(self) -> int | None:
        job_id = self.meta.get("job_id")
        return int(job_id) if job_id is not None else None


def max_upload_bytes() -> int:
    """The size limit of a console upload: the CONSOLE_UPLOAD_MAX_BYTES setting, 200 MB unless set."""
    return int(getattr(settings, "CONSOLE_UPLOAD_MAX_BYTES", DEFAULT_MAX_BYTES))


def staging_dir() -> Path:
    return Path(settings.UPLOAD_DIR) / "staging"


def _human_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):,.0f} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


class SizeLimitHandler(FileUploadHandler):
    """First of a request's upload handlers: drops a file past the limit while it streams in (nothing kept)."""

    def __init__(self, limit: int, request: Any = None):
        super().__init__(request)
        self.limit = limit
        self.too_big = False
        self.received = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_big = True
            raise SkipFile(f"over {self.limit} bytes")
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def file_type_of(name: str) -> str:
    """The upload's file type from its name's extension; UploadError for any other."""
    suffix = Path(name).suffix.lower()
    if suffix not in EXTENSIONS:
        shown = suffix or "no extension"
        raise UploadError("file", f"{name!r} ({shown}) is not a JSONL, CSV or Parquet file (.jsonl, .csv, .parquet)")
    return EXTENSIONS[suffix]


def check_content(path: Path, file_type: str) -> None:
    """Refuse a file whose first bytes (and, for Parquet, last bytes) do not match its extension."""
    size = path.stat().st_size
    if size == 0:
        raise UploadError("file", "the file is empty")
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if file_type == "parquet":
        if head[:4] != b"PAR1" or tail != b"PAR1":
            raise UploadError("file", "named .parquet, but it is not a Parquet file (no PAR1 header and footer)")
        return
    kind = "JSONL" if file_type == "jsonl" else "CSV"
    for magic, what in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise UploadError("file", f"named as {kind}, but it is {what}")
    if b"\x00" in head:
        raise UploadError("file", f"named as {kind}, but it holds binary data (NUL bytes), not text")
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=len(head) == size)
    except UnicodeDecodeError as exc:
        raise UploadError("file", f"not UTF-8 text (invalid byte at {exc.start}): save it as UTF-8") from None
    first = text.lstrip()[:1]
    if file_type == "jsonl":
        if first == "[":
            raise UploadError("file", "a JSON array, not JSONL: JSONL holds one JSON object a line")
        if first != "{":
            raise UploadError("file", "not JSONL: each line must be a JSON object ({...})")
    else:
        header = text.lstrip("\r\n").split("\n", 1)[0]
        if first in ("{", "["):
            raise UploadError("file", "named .csv, but it holds JSON: use .jsonl for one JSON object a line")
        if "," not in header:
            raise UploadError("file", "not CSV: the first line must be a header of comma-separated column names")


def stage_upload(project: Project, user: Any, upload: UploadedFile, fmt: str) -> StagedUpload:
    """Save an uploaded file to a staging directory and validate every row (nothing is written to the items).

    Raises UploadError for a bad format, type, size or content (the staged file is removed then).
    """
    if fmt not in FORMATS:
        raise UploadError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    name = Path(upload.name or "").name[:200]
    file_type = file_type_of(name)
    limit = max_upload_bytes()
    if upload.size is not None and upload.size > limit:
        raise UploadError("file", f"{_human_bytes(upload.size)}: over the limit of {_human_bytes(limit)}", 413)
    prune_staged()
    token = secrets.token_urlsafe(18)
    directory = staging_dir() / token
    directory.mkdir(parents=True, mode=0o700)
    path = directory / f"upload.{file_type}"
    try:
        size = 0
        with path.open("wb") as fh:
            for chunk in upload.chunks():
                size += len(chunk)
                if size > limit:
                    raise UploadError("file", f"over the limit of {_human_bytes(limit)}", 413)
                fh.write(chunk)
        check_content(path, file_type)
        report = validate_file(project, path, fmt=fmt, file_type=file_type)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    meta = {
        "token": token,
        "project_id": project.pk,
        "project": project.slug,
        "user_id": getattr(user, "pk", None),
        "username": getattr(user, "username", ""),
        "name": name,
        "size": size,
        "fmt": fmt,
        "file_type": file_type,
        "created_at": timezone.now().isoformat(),
        "report": report.as_dict(),
        "job_id": None,
    }
    _write_meta(directory, meta)
    return StagedUpload(token, path, meta)


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    tmp = directory / "meta.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(directory / "meta.json")


def load_staged(project: Project, token: str) -> StagedUpload | None:
    """The project's staged upload with this token, or None (no such token, another project's, or removed)."""
    if not _TOKEN.match(token):
        return None
    directory = staging_dir() / token
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    path = directory / f"upload.{meta.get('file_type', '')}"
    if meta.get("project_id") != project.pk or not path.is_file():
        return None
    return StagedUpload(token, path, meta)


def import_staged(project: Project, staged: StagedUpload, user: Any, *, update: bool = False) -> ImportJob:
    """Queue the import of a validated staged file (an ImportJob for a Celery worker); once per file.

    Refused (UploadError) where the validation report has errors, or the file was queued for import before.
    """
    report = staged.report
    if not report.ok:
        raise UploadError(
            "file", f"the validation found {report.error_total:,} problem(s): fix the file and upload it again", 400
        )
    marker = staged.path.parent / "import.lock"
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        queued = staged.job_id
        raise UploadError(
            "file", f"this file was queued for import already{f' (import #{queued})' if queued else ''}", 409
        ) from None
    os.close(fd)
    try:
        job = enqueue_import(project, staged.path, fmt=staged.meta["fmt"], update=update, user=user)
    except BaseException:
        marker.unlink(missing_ok=True)
        raise
    staged.meta["job_id"] = job.pk
    _write_meta(staged.path.parent, staged.meta)
    return job


def staged_name(path: str) -> str:
    """The name a staged file was uploaded as (for an ImportJob's path), else the path's own name."""
    staged = Path(path)
    if staged.parent.parent == staging_dir():
        try:
            return str(json.loads((staged.parent / "meta.json").read_text()).get("name") or staged.name)
        except (OSError, ValueError):
            pass
    return staged.name


def prune_staged(max_age_s: float = STAGED_MAX_AGE_S) -> int:
    """Remove staged uploads older than max_age_s, except those whose import is still queued or running."""
    root = staging_dir()
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    old = [d for d in root.iterdir() if d.is_dir() and _TOKEN.match(d.name) and d.stat().st_mtime < cutoff]
    if not old:
        return 0
    busy = {
        str(Path(p).parent)
        for p in ImportJob.objects.filter(
            status__in=(ImportJob.QUEUED, ImportJob.RUNNING), path__startswith=str(root)
        ).values_list("path", flat=True)
    }
    removed = 0
    for directory in old:
        if str(directory) not in busy:
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    return removed

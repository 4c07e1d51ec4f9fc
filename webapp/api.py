"""The JSON HTTP API (django-ninja): dataset exports and routing candidates' scores.

Authentication is by bearer token only (`Authorization: Bearer hp_...`, made with
`manage.py create_api_token`). Session cookies never authenticate an API call, so the API is exempt
from CSRF without becoming a CSRF hole, and from LoginRequiredMiddleware (the token is the login).
Permissions are the UI's: a project's managers (and superusers) only; 404 for an unknown project or
an object of another project, 403 for a non-manager.

The OpenAPI schema is at /api/openapi.json. The Swagger page is off: without "ninja" in
INSTALLED_APPS django-ninja would load it from a CDN.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver
from django.utils import timezone
from ninja import NinjaAPI, Schema, Status
from ninja.pagination import LimitOffsetPagination, paginate
from ninja.security import HttpBearer
from pydantic import ConfigDict, Field

from webapp import selectors
from webapp.exporting.formats import ExportOptions
from webapp.models import ApiToken, ExportSnapshot, Membership, Project, RoutingCandidate
from webapp.services.candidates import CandidateError, record_score
from webapp.services.exports import OPTION_KEYS, ExportFailed, enqueue_export, snapshot_file

TOKEN_PREFIX = "hp_"  # noqa: S105 (not a secret: what every token starts with)
LAST_USED_EVERY = timedelta(minutes=1)


# --- tokens ---------------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user: Any, name: str = "") -> str:
    """Make a token for the user and return it: the only time it is seen in clear (only its hash is kept)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, key_hash=hash_token(token), prefix=token[:8])
    return token


class TokenAuth(HttpBearer):
    """A live token of an active user; its last use is recorded at most once a minute."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        if not token.startswith(TOKEN_PREFIX):
            return None
        row = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=hash_token(token), revoked=False, user__is_active=True)
            .first()
        )
        if row is None:
            return None
        now = timezone.now()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
            ApiToken.objects.filter(pk=row.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_EVERY)
            ).update(last_used_at=now)
        request.user = row.user
        return row.user


# --- the API --------------------------------------------------------------------------------------


class HybridPrefAPI(NinjaAPI):
    """NinjaAPI whose views are exempt from LoginRequiredMiddleware (they authenticate by token)."""

    @property
    def urls(self) -> tuple[list[URLResolver | URLPattern], str, str]:
        patterns, app_name, namespace = super().urls
        for pattern in patterns:
            if isinstance(pattern, URLPattern):
                login_not_required(pattern.callback)  # marks the view function itself
        return patterns, app_name, namespace


api = HybridPrefAPI(
    title="HybridPref API",
    version="1",
    urls_namespace="api",
    auth=TokenAuth(),
    docs_url=None,
    description="Dataset exports and routing candidates' scores. Authenticate with `Authorization: Bearer <token>`.",
)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden"}, status=403)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Not Found"}, status=404)


def _managed_project(request: HttpRequest, slug: str) -> Project:
    access = selectors.project_access(request.auth, slug)  # type: ignore[attr-defined]
    if access.role != Membership.MANAGER:
        raise PermissionDenied("Only the project's managers may do this.")
    return access.project


def _snapshot(project: Project, version: int) -> ExportSnapshot:
    snapshot = ExportSnapshot.objects.filter(project=project, version=version).first()
    if snapshot is None:
        raise Http404("No such export")
    return snapshot


# --- schemas --------------------------------------------------------------------------------------


class Error(Schema):
    detail: str


class ExportFile(Schema):
    name: str
    bytes: int
    sha256: str


class Snapshot(Schema):
    version: int
    format: str
    file_type: str
    status: str
    row_count: int
    item_count: int
    files: list[ExportFile]
    options: dict[str, Any]
    counts: dict[str, Any]
    code_version: str
    error: str
    created_at: datetime
    finished_at: datetime | None


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ExportOptions)}


class ExportOptionsIn(Schema):
    """OPTION_KEYS, with the exporter's defaults; an unknown key is refused."""

    model_config = ConfigDict(extra="forbid")

    rule: str = _DEFAULTS["rule"]
    ai_judge: str | None = _DEFAULTS["ai_judge"]
    aspect: str = _DEFAULTS["aspect"]
    seed: int = _DEFAULTS["seed"]
    test_fraction: float = _DEFAULTS["test_fraction"]
    conversational: bool = _DEFAULTS["conversational"]
    ties: str = _DEFAULTS["ties"]
    with_margin: bool = _DEFAULTS["with_margin"]
    label_source: str = _DEFAULTS["label_source"]


if set(ExportOptionsIn.model_fields) != set(OPTION_KEYS):
    raise ImportError("webapp.api.ExportOptionsIn must have the fields of services.exports.OPTION_KEYS")


class ExportIn(Schema):
    format: str = Field(description="multipref, helpsteer2-preference, trl-preference or trl-unpaired")
    file_type: str = Field("jsonl", description="jsonl, parquet or hf")
    options: ExportOptionsIn = Field(default_factory=ExportOptionsIn)
    routes: list[str] | None = Field(None, description="Only items with these routes (default: all).")


class ScoreIn(Schema):
    score: float
    metric: str = ""


class Candidate(Schema):
    id: int
    project: str
    budget: float
    score: float | None
    score_source: str
    metric: str
    scored_at: datetime | None

    @staticmethod
    def resolve_project(obj: RoutingCandidate) -> str:
        return obj.project.slug


# --- endpoints ------------------------------------------------------------------------------------


@api.get("/projects/{slug}/exports", response=list[Snapshot], tags=["exports"])
@paginate(LimitOffsetPagination)
def list_exports(request: HttpRequest, slug: str) -> Any:
    """The project's export snapshots, newest first."""
    return _managed_project(request, slug).exports.all()


@api.post("/projects/{slug}/exports", response={202: Snapshot, 400: Error}, tags=["exports"])
def start_export(request: HttpRequest, slug: str, body: ExportIn) -> Any:
    """Record a snapshot and have a worker write it; poll the snapshot until its status is done."""
    project = _managed_project(request, slug)
    try:
        snapshot = enqueue_export(
            project,
            format=body.format,
            file_type=body.file_type,
            options=body.options.model_dump(exclude_unset=True),
            routes=body.routes or None,
            user=request.auth,  # type: ignore[attr-defined]
        )
    except ExportFailed as exc:
        return Status(400, {"detail": str(exc)})
    return Status(202, snapshot)


@api.get("/projects/{slug}/exports/{int:version}", response=Snapshot, tags=["exports"])
def get_export(request: HttpRequest, slug: str, version: int) -> Any:
    return _snapshot(_managed_project(request, slug), version)


@api.get("/projects/{slug}/exports/{int:version}/files/{path:name}", tags=["exports"])
def download_export_file(request: HttpRequest, slug: str, version: int, name: str) -> FileResponse:
    """A file of a finished snapshot (a name from its `files`), streamed."""
    project = _managed_project(request, slug)
    snapshot = _snapshot(project, version)
    try:
        path = snapshot_file(snapshot, name)
    except FileNotFoundError:
        raise Http404("No such file in this export") from None
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"{project.slug}-v{version}-{path.name}")


@api.post("/candidates/{int:candidate_id}/score", response={200: Candidate, 400: Error}, tags=["routing"])
def score_candidate(request: HttpRequest, candidate_id: int, body: ScoreIn) -> Any:
    """Record (or replace) the score a reward model trained on the candidate's dataset achieved."""
    candidate = RoutingCandidate.objects.select_related("project").filter(pk=candidate_id).first()
    if candidate is None:
        raise Http404("No such candidate")
    project = _managed_project(request, candidate.project.slug)
    try:
        scored = record_score(candidate.pk, body.score, metric=body.metric)
    except CandidateError as exc:
        return Status(400, {"detail": str(exc)})
    scored.project = project
    return scored

"""The JSON HTTP API (django-ninja): projects, items, annotations, judgments, routing runs, exports and
routing candidates' scores.

Authentication is by bearer token only (`Authorization: Bearer hp_...`, made with
`manage.py create_api_token`). Session cookies never authenticate an API call, so the API is exempt
from CSRF without becoming a CSRF hole, and from LoginRequiredMiddleware (the token is the login).
Permissions are the UI's: a project's members see its summary, its managers (and superusers) everything
else; 404 for an unknown project or an object of another project, 403 for a non-member or a non-manager.
Lists are paginated (limit/offset, with next and previous links); annotations and judgments also stream
as NDJSON (`?format=ndjson`), read on a server-side cursor. Endpoints stay thin: reads come from
webapp.selectors, writes go through webapp.services. See docs/api.md.

The OpenAPI schema is at /api/openapi.json. The Swagger page is off: without "ninja" in
INSTALLED_APPS django-ninja would load it from a CDN.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import typing
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, URLResolver
from django.utils import timezone
from ninja import NinjaAPI, Query, Schema, Status
from ninja.pagination import LimitOffsetPagination, paginate
from ninja.responses import NinjaJSONEncoder
from ninja.security import HttpBearer
from pydantic import AfterValidator, ConfigDict, Field

from webapp import scheme as sch
from webapp import selectors
from webapp.exporting.formats import ExportOptions
from webapp.importing.formats import NativeRow
from webapp.models import (
    ApiToken,
    ExportSnapshot,
    HumanAnnotation,
    Item,
    Judgment,
    Membership,
    Project,
    RoutingCandidate,
    RoutingRun,
)
from webapp.services.api_support import Rejected, create_items, create_project_for
from webapp.services.candidates import CandidateError, record_score
from webapp.services.exports import OPTION_KEYS, ExportFailed, enqueue_export, snapshot_file
from webapp.services.routing import RoutingError, route_project

TOKEN_PREFIX = "hp_"  # noqa: S105 (not a secret: what every token starts with)
LAST_USED_EVERY = timedelta(minutes=1)
INT_MAX = 2**31 - 1  # PostgreSQL integer
SMALLINT_MAX = 2**15 - 1
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
STREAM_CHUNK = 2000  # rows per fetch from the server-side cursor of an NDJSON stream
NDJSON = "application/x-ndjson"
F = TypeVar("F", bound=typing.Callable[..., Any])


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
    description=(
        "Projects, items, annotations, judgments, routing runs, dataset exports and routing candidates' scores."
        " Authenticate with `Authorization: Bearer <token>` (`manage.py create_api_token`). See docs/api.md."
    ),
)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden"}, status=403)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Not Found"}, status=404)


@api.exception_handler(Rejected)
def _rejected(request: HttpRequest, exc: Exception) -> HttpResponse:
    assert isinstance(exc, Rejected)
    return api.create_response(request, _invalid(exc), status=exc.status)


def _invalid(exc: Rejected) -> dict[str, Any]:
    return {
        "detail": str(exc),
        "total": exc.total,
        "errors": [{"row": p.row, "field": p.field, "message": p.message} for p in exc.problems],
    }


def _access(request: HttpRequest, slug: str) -> selectors.Access:
    if "\x00" in slug:  # no slug holds one, and PostgreSQL refuses it as a parameter
        raise Http404("No such project")
    return selectors.project_access(request.auth, slug)  # type: ignore[attr-defined]


def _managed_project(request: HttpRequest, slug: str) -> Project:
    access = _access(request, slug)
    if access.role != Membership.MANAGER:
        raise PermissionDenied("Only the project's managers may do this.")
    return access.project


def _snapshot(project: Project, version: int) -> ExportSnapshot:
    snapshot = ExportSnapshot.objects.filter(project=project, version=version).first()
    if snapshot is None:
        raise Http404("No such export")
    return snapshot


# --- input checks -----------------------------------------------------------------------------------


def _storable(value: str) -> str:
    """Text PostgreSQL can store: no NUL, no unpaired surrogate (JSON's \\ud800 escapes)."""
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\u0000), which cannot be stored")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains an unpaired surrogate, which is not text") from None
    return value


Text = Annotated[str, AfterValidator(_storable)]


# --- pagination -----------------------------------------------------------------------------------


class Pagination(LimitOffsetPagination):
    """limit/offset pages with the total count and the next and previous pages' URLs (null at the ends)."""

    class Input(Schema):
        limit: int = Field(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Rows per page.")
        offset: int = Field(0, ge=0, le=INT_MAX, description="Rows to skip.")

    class Output(Schema):
        items: list[Any]
        count: int = Field(description="Rows in all pages.")
        next: str | None = Field(description="The next page's URL; null on the last page.")
        previous: str | None = Field(description="The previous page's URL; null on the first page.")

    def paginate_queryset(self, queryset: QuerySet[Any], pagination: Any, request: HttpRequest, **params: Any) -> Any:
        limit, offset = pagination.limit, pagination.offset
        count = self._items_count(queryset)
        return {
            "items": list(queryset[offset : offset + limit]),
            "count": count,
            "next": _page_url(request, offset + limit, limit) if offset + limit < count else None,
            "previous": _page_url(request, max(0, offset - limit), limit) if offset > 0 else None,
        }


def _page_url(request: HttpRequest, offset: int, limit: int) -> str:
    query = request.GET.copy()
    query["limit"], query["offset"] = str(limit), str(offset)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def _typed(func: F) -> F:
    """Resolve the view's annotations here: @paginate's wrapper would look them up in ninja's module."""
    func.__annotations__ = typing.get_type_hints(func, include_extras=True)
    return func


PAGER = Pagination()
PageIn = Annotated[Pagination.Input, Query()]


def _stream(queryset: QuerySet[Any], schema: type[Schema]) -> StreamingHttpResponse:
    """Every row as one line of JSON (as in the pages), read on a server-side cursor STREAM_CHUNK rows at a time."""

    def lines() -> Iterator[bytes]:
        buffer: list[str] = []
        for obj in queryset.iterator(chunk_size=STREAM_CHUNK):
            buffer.append(json.dumps(schema.from_orm(obj).model_dump(), cls=NinjaJSONEncoder))
            if len(buffer) >= 200:
                yield ("\n".join(buffer) + "\n").encode()
                buffer = []
        if buffer:
            yield ("\n".join(buffer) + "\n").encode()

    return StreamingHttpResponse(lines(), content_type=NDJSON)


def _example(body: Any) -> dict[str, Any]:
    """OpenAPI: an example JSON request body (docs, and the first request schemathesis sends)."""
    return {"requestBody": {"content": {"application/json": {"example": body}}}}


def _ndjson_response(schema: str) -> dict[str, Any]:
    """OpenAPI: the 200 of a list that also streams as NDJSON (?format=ndjson)."""
    return {
        "responses": {
            200: {
                "description": f"A page (JSON), or with ?format=ndjson every {schema} as one line of JSON.",
                "content": {NDJSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
            }
        }
    }


# --- schemas --------------------------------------------------------------------------------------


class Error(Schema):
    detail: str


class Problem(Schema):
    row: str = Field(description='The row as a person finds it ("line 3", "item 2"); empty for the request.')
    field: str = Field(description='The field, dotted ("responses.1.text"); empty for the whole row.')
    message: str


class Invalid(Schema):
    detail: str
    total: int = Field(description="Problems found (errors lists the first 50).")
    errors: list[Problem]


ERRORS: dict[int, Any] = {401: Error, 403: Error, 404: Error}


class SchemeOut(Schema):
    kind: str
    scale: str
    aspects: list[str]
    reasons: dict[str, list[str]]
    rating_attributes: list[str]
    justification_required: bool
    justification_min_length: int
    ask_confidence: bool
    allow_ties: bool


class ProjectSummary(Schema):
    slug: str
    name: str
    kind: str
    scale: str
    state: str
    role: str = Field(description="The caller's: manager (superusers, in every project) or annotator.")
    n_items: int

    @staticmethod
    def resolve_role(obj: Project) -> str:  # member_role: see selectors.api_projects
        return str(obj.member_role)  # type: ignore[attr-defined]


class Counts(Schema):
    items: int
    items_by_route: dict[str, int]
    items_by_status: dict[str, int]
    human_annotations: int
    judgments: int
    routing_runs: int
    exports: int


class ProjectDetail(Schema):
    slug: str
    name: str
    state: str
    role: str
    guidelines: str
    scheme: SchemeOut
    overlap_normal: int
    overlap_expert: int
    human_budget: int | None
    cost_per_human_annotation: float
    created_at: datetime
    counts: Counts


def _project_detail(project: Project, role: str) -> dict[str, Any]:
    return {
        **{f: getattr(project, f) for f in ("slug", "name", "state", "guidelines", "created_at")},
        **{f: getattr(project, f) for f in ("overlap_normal", "overlap_expert", "human_budget")},
        "role": role,
        "cost_per_human_annotation": float(project.cost_per_human_annotation),
        "scheme": {f.name: getattr(project, f.name) for f in dataclasses.fields(sch.Scheme)},
        "counts": selectors.project_counts(project),
    }


class ProjectIn(Schema):
    """A new project. The scheme (kind, scale, aspects, reasons, rating_attributes) is checked by webapp.scheme."""

    model_config = ConfigDict(extra="forbid")

    slug: Text = Field(max_length=100, description="Lowercase letters, digits, '-' and '_'.")
    name: Text = Field("", max_length=200, description="Default: the slug.")
    kind: Text = Field(sch.PAIRWISE, description=" or ".join(sch.KINDS))
    scale: Text = Field(sch.LIKERT5, description=" or ".join(sch.SCALES))
    aspects: list[Text] = Field(default_factory=lambda: list(sch.DEFAULT_ASPECTS))
    reasons: dict[Text, list[Text]] = Field(default_factory=dict, description="{aspect: [reason, ...]}")
    rating_attributes: list[Text] = Field(default_factory=list, description=", ".join(sch.RATING_ATTRIBUTES))
    guidelines: Text = Field("", description="Markdown, shown to annotators.")
    state: Literal["draft", "active", "closed"] = "active"
    justification_required: bool = False
    justification_min_length: int = Field(0, ge=0, le=INT_MAX)
    ask_confidence: bool = True
    allow_ties: bool = False
    overlap_normal: int = Field(2, ge=0, le=SMALLINT_MAX)
    overlap_expert: int = Field(0, ge=0, le=SMALLINT_MAX)
    human_budget: int | None = Field(None, ge=0, le=INT_MAX)
    cost_per_human_annotation: Decimal = Field(Decimal(0), ge=0, max_digits=10, decimal_places=4)


class ItemSummary(Schema):
    id: int
    external_id: str
    prompt: str
    conversation: list[dict[str, Any]] | None
    metadata: dict[str, Any]
    route: str
    route_reason: str
    status: str
    n_human: int = Field(description="Human annotations.")
    n_judgments: int = Field(description="Judgments (every order, prompt version and judge).")
    created_at: datetime
    updated_at: datetime


class ResponseOut(Schema):
    position: int = Field(description="0 is A, 1 is B, ...")
    model_name: str
    text: str


class ItemDetail(ItemSummary):
    features: dict[str, Any]
    responses: list[ResponseOut]

    @staticmethod
    def resolve_responses(obj: Item) -> list[Any]:
        return list(obj.responses.all())


def _native_row_schema() -> dict[str, Any]:
    """The native import row's JSON schema with its definitions inlined (an OpenAPI body cannot use $defs)."""
    schema = NativeRow.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"$ref"} and node["$ref"].startswith("#/$defs/"):
                return inline(defs[node["$ref"].removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


_ITEMS_EXAMPLE = [
    {
        "id": "q-101",
        "prompt": "What is the capital of France?",
        "responses": [{"text": "Paris.", "model": "model-a"}, {"text": "Lyon.", "model": "model-b"}],
        "metadata": {"source": "api"},
    }
]
_ITEMS_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "Items in the native import format (docs/formats.md): a JSON array of rows, or NDJSON"
            " (one row per line; Content-Type application/x-ndjson)."
        ),
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": _native_row_schema()},
                "example": _ITEMS_EXAMPLE,
            },
            NDJSON: {
                "schema": {
                    "type": "array",
                    "items": _native_row_schema(),
                    "description": "The rows, one JSON object per line (the array's elements).",
                }
            },
        },
    }
}


class ItemsCreated(Schema):
    created: int
    updated: int = Field(description="Changed items rewritten (update=true).")
    unchanged: int = Field(description="Items already there with the same content: skipped.")
    changed_not_updated: list[str] = Field(description="External ids of changed items left alone (no update=true).")


class AnnotationOut(Schema):
    id: int
    item_id: int
    item_external_id: str
    annotator: str | None = Field(description="The platform user's username; null for an imported annotation.")
    external_annotator: str = Field(description="The source's annotator id (imported annotations).")
    tier: str
    preferences: dict[str, Any]
    ranking: list[Any] | None
    ratings: dict[str, Any]
    reasons: dict[str, Any]
    own_reasons: dict[str, Any]
    confidence: dict[str, Any]
    justification: str
    time_spent: float | None
    flags: list[Any]
    imported: bool
    external_timestamp: str
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_item_external_id(obj: HumanAnnotation) -> str:
        return obj.item.external_id

    @staticmethod
    def resolve_annotator(obj: HumanAnnotation) -> str | None:
        return obj.annotator.get_username() if obj.annotator is not None else None


class AnnotationPage(Pagination.Output):
    items: list[AnnotationOut]


class JudgmentOut(Schema):
    id: int
    item_id: int
    item_external_id: str
    judge: str
    run_id: int | None
    order: str = Field(description='Shown order as canonical indices ("0-1", "1-0"), or "combined".')
    prompt_version: str
    labels: dict[str, Any]
    ranking: list[Any] | None
    soft: dict[str, Any]
    details: dict[str, Any]
    rationale: str
    order_inconsistent: bool | None
    status: str
    error: str
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    latency_ms: int | None
    attempts: int
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_item_external_id(obj: Judgment) -> str:
        return obj.item.external_id

    @staticmethod
    def resolve_judge(obj: Judgment) -> str:
        return obj.judge.name

    @staticmethod
    def resolve_cost(obj: Judgment) -> float | None:
        return None if obj.cost is None else float(obj.cost)


class JudgmentPage(Pagination.Output):
    items: list[JudgmentOut]


class RoutingRunIn(Schema):
    model_config = ConfigDict(extra="forbid")

    strategy: Text = Field(description=", ".join(RoutingRun.STRATEGIES))
    budget: float = Field(
        gt=0, allow_inf_nan=False, description="A share of the items (0..1], or a number of items (> 1)."
    )
    seed: int = Field(0, ge=0, le=INT_MAX)
    candidates: int = Field(1024, ge=1, le=100_000, description="Candidate sets the ppm strategies search.")
    judge: Text | None = Field(None, max_length=200, description="The judge whose verdicts count (default: all).")


class RoutingRunOut(Schema):
    id: int
    strategy: str
    budget: float
    budget_n: int = Field(description="Items routed to humans.")
    seed: int
    n_candidates: int
    status: str
    summary: dict[str, Any]
    error: str
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None

    @staticmethod
    def resolve_created_by(obj: RoutingRun) -> str | None:
        return obj.created_by.get_username() if obj.created_by is not None else None


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
    unsent: bool = Field(description="Its task could not be sent (the task queue was down); sent again later.")
    created_at: datetime
    finished_at: datetime | None


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ExportOptions)}


class ExportOptionsIn(Schema):
    """OPTION_KEYS, with the exporter's defaults; an unknown key is refused."""

    model_config = ConfigDict(extra="forbid")

    rule: Text = _DEFAULTS["rule"]
    ai_judge: Text | None = _DEFAULTS["ai_judge"]
    aspect: Text = _DEFAULTS["aspect"]
    seed: int = _DEFAULTS["seed"]
    test_fraction: float = _DEFAULTS["test_fraction"]
    conversational: bool = _DEFAULTS["conversational"]
    ties: Text = _DEFAULTS["ties"]
    with_margin: bool = _DEFAULTS["with_margin"]
    label_source: Text = _DEFAULTS["label_source"]


if set(ExportOptionsIn.model_fields) != set(OPTION_KEYS):
    raise ImportError("webapp.api.ExportOptionsIn must have the fields of services.exports.OPTION_KEYS")


class ExportIn(Schema):
    format: Text = Field(description="multipref, helpsteer2-preference, trl-preference or trl-unpaired")
    file_type: Text = Field("jsonl", description="jsonl, parquet or hf")
    options: ExportOptionsIn = Field(default_factory=ExportOptionsIn)
    routes: list[Text] | None = Field(None, description="Only items with these routes (default: all).")


class ScoreIn(Schema):
    score: float
    metric: Text = Field("", max_length=100)


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


# --- projects -------------------------------------------------------------------------------------


@api.get("/projects", response={200: list[ProjectSummary], 401: Error}, tags=["projects"])
@paginate(Pagination)
@_typed
def list_projects(request: HttpRequest) -> Any:
    """The projects the caller may see (a superuser: all; anyone else: those they are a member of), by slug."""
    return selectors.api_projects(request.auth)  # type: ignore[attr-defined]


@api.post(
    "/projects",
    response={201: ProjectDetail, 400: Invalid, **ERRORS},
    tags=["projects"],
    openapi_extra=_example({"slug": "prefs-2", "name": "Preferences", "aspects": ["overall", "helpful"]}),
)
def create_project(request: HttpRequest, body: ProjectIn) -> Any:
    """Create a project (superusers, and staff with the add-project permission, as in the admin site).

    A staff creator becomes the project's manager. 400 names each bad field; nothing is written then.
    """
    if not selectors.may_create_projects(request.auth):  # type: ignore[attr-defined]
        raise PermissionDenied("Only administrators create projects.")
    project = create_project_for(request.auth, **body.model_dump())  # type: ignore[attr-defined]
    return Status(201, _project_detail(project, Membership.MANAGER))


@api.get("/projects/{slug}", response={200: ProjectDetail, **ERRORS}, tags=["projects"])
def get_project(request: HttpRequest, slug: str) -> Any:
    """The project's scheme, settings and counts, for any of its members."""
    access = _access(request, slug)
    return _project_detail(access.project, access.role)


# --- items ----------------------------------------------------------------------------------------


@api.get("/projects/{slug}/items", response={200: list[ItemSummary], **ERRORS}, tags=["items"])
@paginate(Pagination)
@_typed
def list_items(
    request: HttpRequest,
    slug: str,
    route: Literal["unrouted", "human", "ai"] | None = None,
    status: Literal["pending", "in_progress", "complete", "skipped"] | None = None,
) -> Any:
    """The project's items by id, optionally only those of a route and/or a status."""
    return selectors.api_items(_managed_project(request, slug), route=route, status=status)


@api.post(
    "/projects/{slug}/items",
    response={200: ItemsCreated, 400: Invalid, 413: Invalid, **ERRORS},
    tags=["items"],
    openapi_extra=_ITEMS_BODY,
)
def bulk_create_items(request: HttpRequest, slug: str, update: bool = False) -> Any:
    """Add items in bulk, all or nothing: every row is checked first, and 400 names each bad row and field.

    The body streams into a temporary file, then goes through the file import's service (same rules).
    Items already there with the same content are skipped; changed ones are rewritten with update=true.
    """
    project = _managed_project(request, slug)
    result = create_items(project, request, content_type=request.content_type or "", update=update)
    return {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "changed_not_updated": result.changed_not_updated,
    }


@api.get("/projects/{slug}/items/{int:item_id}", response={200: ItemDetail, **ERRORS}, tags=["items"])
def get_item(request: HttpRequest, slug: str, item_id: int) -> Any:
    """One item with its responses (canonical order: position 0 is A)."""
    return selectors.api_item(_managed_project(request, slug), item_id)


# --- annotations and judgments ----------------------------------------------------------------------


@api.get(
    "/projects/{slug}/annotations",
    response={200: AnnotationPage, **ERRORS},
    tags=["annotations"],
    openapi_extra=_ndjson_response("AnnotationOut"),
)
def list_annotations(
    request: HttpRequest,
    slug: str,
    page: PageIn,
    item: Text | None = None,
    tier: Literal["normal", "expert"] | None = None,
    format: Literal["json", "ndjson"] = "json",
) -> Any:
    """Human annotations (canonical response order) by id; `item` is an item's external id.

    format=ndjson streams every matching annotation, one JSON object per line (limit and offset unused).
    """
    annotations = selectors.project_annotations(_managed_project(request, slug), item=item, tier=tier)
    if format == "ndjson":
        return _stream(annotations, AnnotationOut)
    return PAGER.paginate_queryset(annotations, page, request)


@api.get(
    "/projects/{slug}/judgments",
    response={200: JudgmentPage, **ERRORS},
    tags=["judgments"],
    openapi_extra=_ndjson_response("JudgmentOut"),
)
def list_judgments(
    request: HttpRequest,
    slug: str,
    page: PageIn,
    judge: Text | None = None,
    status: Literal["pending", "done", "failed"] | None = None,
    order: Text | None = None,
    format: Literal["json", "ndjson"] = "json",
) -> Any:
    """Judgments (canonical response order) by id; `judge` is a judge's name, `order` e.g. "0-1" or "combined".

    format=ndjson streams every matching judgment, one JSON object per line (limit and offset unused).
    """
    project = _managed_project(request, slug)
    judgments = selectors.project_judgments(project, judge=judge, status=status, order=order)
    if format == "ndjson":
        return _stream(judgments, JudgmentOut)
    return PAGER.paginate_queryset(judgments, page, request)


# --- routing --------------------------------------------------------------------------------------


@api.post(
    "/projects/{slug}/routing-runs",
    response={202: RoutingRunOut, 400: Error, **ERRORS},
    tags=["routing"],
    openapi_extra=_example({"strategy": "random", "budget": 0.5, "seed": 1}),
)
def start_routing_run(request: HttpRequest, slug: str, body: RoutingRunIn) -> Any:
    """Route the project's items as the routing page does (the same service, run in the request).

    budget: a share of the items in (0, 1], or above 1 a whole number of items.
    """
    project = _managed_project(request, slug)
    if body.budget > 1 and not body.budget.is_integer():
        return Status(400, {"detail": "budget: a count above 1 must be whole"})
    budget: float | int = int(body.budget) if body.budget > 1 else body.budget
    try:
        run = route_project(
            project,
            strategy=body.strategy,
            budget=budget,
            seed=body.seed,
            n_candidates=body.candidates,
            judge=body.judge or None,
            user=request.auth,  # type: ignore[attr-defined]
        )
    except RoutingError as exc:
        return Status(400, {"detail": str(exc)})
    return Status(202, run)


@api.get("/projects/{slug}/routing-runs", response={200: list[RoutingRunOut], **ERRORS}, tags=["routing"])
@paginate(Pagination)
@_typed
def list_routing_runs(request: HttpRequest, slug: str) -> Any:
    """The project's routing runs, newest first."""
    return selectors.project_routing_runs(_managed_project(request, slug))


@api.get("/projects/{slug}/routing-runs/{int:run_id}", response={200: RoutingRunOut, **ERRORS}, tags=["routing"])
def get_routing_run(request: HttpRequest, slug: str, run_id: int) -> Any:
    return selectors.routing_run_for_project(_managed_project(request, slug), run_id)


# --- exports --------------------------------------------------------------------------------------


@api.get("/projects/{slug}/exports", response={200: list[Snapshot], **ERRORS}, tags=["exports"])
@paginate(Pagination)
@_typed
def list_exports(request: HttpRequest, slug: str) -> Any:
    """The project's export snapshots, newest first."""
    return selectors.project_exports(_managed_project(request, slug))


@api.post(
    "/projects/{slug}/exports",
    response={202: Snapshot, 400: Error, **ERRORS},
    tags=["exports"],
    openapi_extra=_example({"format": "trl-preference", "file_type": "jsonl", "options": {"seed": 7}}),
)
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


@api.get("/projects/{slug}/exports/{int:version}", response={200: Snapshot, **ERRORS}, tags=["exports"])
def get_export(request: HttpRequest, slug: str, version: int) -> Any:
    return _snapshot(_managed_project(request, slug), version)


@api.get("/projects/{slug}/exports/{int:version}/files/{path:name}", response=ERRORS, tags=["exports"])
def download_export_file(request: HttpRequest, slug: str, version: int, name: str) -> FileResponse:
    """A file of a finished snapshot (a name from its `files`), streamed."""
    project = _managed_project(request, slug)
    snapshot = _snapshot(project, version)
    try:
        path = snapshot_file(snapshot, name)
    except FileNotFoundError:
        raise Http404("No such file in this export") from None
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"{project.slug}-v{version}-{path.name}")


# --- candidates -----------------------------------------------------------------------------------


@api.post(
    "/candidates/{int:candidate_id}/score",
    response={200: Candidate, 400: Error, **ERRORS},
    tags=["routing"],
    openapi_extra=_example({"score": 0.734, "metric": "pairwise_accuracy"}),
)
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

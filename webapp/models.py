"""The data model. Integrity rules live here as database constraints, not only in forms."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from webapp import scheme as sch


def _choices(values: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(v, v) for v in values]


def _in(field: str, values: tuple[str, ...], name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(**{f"{field}__in": values}), name=name)


def default_aspects() -> list[str]:
    return list(sch.DEFAULT_ASPECTS)


class Project(models.Model):
    DRAFT, ACTIVE, CLOSED = "draft", "active", "closed"
    STATES = (DRAFT, ACTIVE, CLOSED)

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown, shown to annotators.")
    kind = models.CharField(max_length=20, choices=_choices(sch.KINDS), default=sch.PAIRWISE)
    scale = models.CharField(max_length=20, choices=_choices(sch.SCALES), default=sch.LIKERT5)
    aspects = models.JSONField(default=default_aspects)
    # {aspect: [reason, ...]}: the checklist shown under each aspect.
    reasons = models.JSONField(default=dict, blank=True)
    # Subset of HelpSteer2's 0-4 attributes asked per response; empty means none.
    rating_attributes = models.JSONField(default=list, blank=True)
    justification_required = models.BooleanField(default=False)
    justification_min_length = models.PositiveIntegerField(default=0)
    ask_confidence = models.BooleanField(default=True)
    allow_ties = models.BooleanField(default=False, help_text="Ranking projects: tied responses allowed.")
    overlap_normal = models.PositiveSmallIntegerField(default=2, help_text="Annotations per item by normal annotators.")
    overlap_expert = models.PositiveSmallIntegerField(default=0, help_text="Annotations per item by experts.")
    human_budget = models.PositiveIntegerField(null=True, blank=True, help_text="Items that may go to humans.")
    cost_per_human_annotation = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("0"))
    state = models.CharField(max_length=10, choices=_choices(STATES), default=DRAFT)
    # Gold items and the qualification test (services/gold.py, docs/annotating.md).
    gold_rate = models.FloatField(default=0, help_text="Share of claims that serve a gold item (0: none).")
    qualification_required = models.BooleanField(
        default=False, help_text="Annotators pass the qualification test before they get items."
    )
    qualification_pass_mark = models.FloatField(default=0.9, help_text="Share of qualification items to get right.")
    pause_below = models.FloatField(
        null=True, blank=True, help_text="Pause an annotator whose gold accuracy falls below this (empty: never)."
    )
    pause_min_gold = models.PositiveIntegerField(default=5, help_text="Gold answers needed before a pause.")
    # Set by services.gold (with this row locked) while the project has gold items or paused members: only then
    # do claims and submits consult the gold service, so a project without gold pays nothing for it.
    gold_active = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="project_gold_rate_share"),
            models.CheckConstraint(
                condition=Q(qualification_pass_mark__gte=0) & Q(qualification_pass_mark__lte=1),
                name="project_pass_mark_share",
            ),
            models.CheckConstraint(
                condition=Q(pause_below__isnull=True) | (Q(pause_below__gte=0) & Q(pause_below__lte=1)),
                name="project_pause_below_share",
            ),
            models.CheckConstraint(condition=Q(pause_min_gold__gte=1), name="project_pause_min_gold_positive"),
            _in("kind", sch.KINDS, "project_kind_valid"),
            _in("scale", sch.SCALES, "project_scale_valid"),
            _in("state", ("draft", "active", "closed"), "project_state_valid"),
            models.CheckConstraint(condition=Q(cost_per_human_annotation__gte=0), name="project_cost_nonnegative"),
            models.CheckConstraint(condition=~Q(slug=""), name="project_slug_not_empty"),
        ]

    def __str__(self) -> str:
        return self.slug

    def scheme(self) -> sch.Scheme:
        return sch.Scheme(
            kind=self.kind,
            scale=self.scale,
            aspects=tuple(self.aspects),
            reasons={k: tuple(v) for k, v in (self.reasons or {}).items()},
            rating_attributes=tuple(self.rating_attributes or ()),
            justification_required=self.justification_required,
            justification_min_length=self.justification_min_length,
            ask_confidence=self.ask_confidence,
            allow_ties=self.allow_ties,
        )


class Membership(models.Model):
    """Who may do what in a project. Site admins (is_superuser) see everything."""

    MANAGER, ANNOTATOR = "manager", "annotator"
    ROLES = (MANAGER, ANNOTATOR)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=_choices(ROLES))
    # Items this annotator is asked to do in the project; empty means "as many as the queue offers".
    quota = models.PositiveIntegerField(null=True, blank=True)
    # Paused in this project (gold accuracy below the project's pause_below): no items until a manager unpauses.
    paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    # The last unpause: the pause rule then counts only the gold answers given since.
    unpaused_at = models.DateTimeField(null=True, blank=True)
    UNTESTED, TESTING, PASSED, FAILED = "untested", "testing", "passed", "failed"
    QUALIFICATIONS = (UNTESTED, TESTING, PASSED, FAILED)
    qualification = models.CharField(max_length=10, choices=_choices(QUALIFICATIONS), default=UNTESTED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique"),
            _in("role", ("manager", "annotator"), "membership_role_valid"),
            _in("qualification", ("untested", "testing", "passed", "failed"), "membership_qualification_valid"),
            models.CheckConstraint(
                condition=Q(paused=False) | Q(paused_at__isnull=False), name="membership_pause_has_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.project_id}: {self.role}"


class AnnotatorProfile(models.Model):
    NORMAL, EXPERT = sch.TIERS

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotator_profile")
    tier = models.CharField(max_length=10, choices=_choices(sch.TIERS), default=NORMAL)
    domains = models.JSONField(default=list, blank=True, help_text="Expertise domains, e.g. subjects of study.")
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [_in("tier", sch.TIERS, "annotator_tier_valid")]

    def __str__(self) -> str:
        return f"{self.user_id} ({self.tier})"


class Item(models.Model):
    UNROUTED, HUMAN, AI = "unrouted", "human", "ai"
    ROUTES = (UNROUTED, HUMAN, AI)
    PENDING, IN_PROGRESS, COMPLETE, SKIPPED = "pending", "in_progress", "complete", "skipped"
    STATUSES = (PENDING, IN_PROGRESS, COMPLETE, SKIPPED)

    # No index of its own: the (project, external_id) unique index serves lookups by project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items", db_index=False)
    external_id = models.CharField(max_length=255)
    prompt = models.TextField(blank=True)
    # Multi-turn context: [{"role": "user"|"assistant"|"system", "content": "..."}]; the responses
    # answer its last user turn. Null for single-prompt items.
    conversation = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    features = models.JSONField(default=dict, blank=True)
    route = models.CharField(max_length=10, choices=_choices(ROUTES), default=UNROUTED)
    route_reason = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=_choices(STATUSES), default=PENDING)
    # sha256 of the imported content: re-imports skip unchanged items, --update rewrites changed ones.
    content_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="item_external_id_unique"),
            models.CheckConstraint(condition=~Q(external_id=""), name="item_external_id_not_empty"),
            models.CheckConstraint(
                condition=~Q(prompt="") | Q(conversation__isnull=False), name="item_has_prompt_or_conversation"
            ),
            _in("route", ("unrouted", "human", "ai"), "item_route_valid"),
            _in("status", ("pending", "in_progress", "complete", "skipped"), "item_status_valid"),
        ]
        # The annotation queue's index: ends with id so that a claim reads the first pending items in order.
        indexes = [models.Index(fields=["project", "route", "status", "id"], name="item_queue_idx")]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.external_id}"


class Response(models.Model):
    # No index of its own: the (item, position) unique index serves lookups by item.
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="responses", db_index=False)
    position = models.PositiveSmallIntegerField(help_text="Canonical position: 0 is A, 1 is B, ...")
    model_name = models.CharField(max_length=200, blank=True)
    text = models.TextField()

    class Meta:
        ordering = ["item_id", "position"]
        constraints = [models.UniqueConstraint(fields=["item", "position"], name="response_position_unique")]

    def __str__(self) -> str:
        return f"{self.item_id}#{self.position}"


class Assignment(models.Model):
    LEASED, SUBMITTED, SKIPPED, EXPIRED = "leased", "submitted", "skipped", "expired"
    STATUSES = (LEASED, SUBMITTED, SKIPPED, EXPIRED)

    # No single-column indexes on the two keys: the indexes below (and the unique constraint) begin with
    # them, and a third index would only cost every claim's insert and give the planner a worse choice.
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments", db_index=False)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="assignments", db_index=False
    )
    # The permutation shown: display_order[k] is the canonical index of the k-th response shown.
    display_order = models.JSONField()
    # The annotator's tier when the slot was claimed: overlap is counted per tier.
    tier = models.CharField(max_length=10, choices=_choices(sch.TIERS), default=sch.TIERS[0])
    lease_expires_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=_choices(STATUSES), default=LEASED)
    skip_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="assignment_once_per_annotator"),
            _in("status", ("leased", "submitted", "skipped", "expired"), "assignment_status_valid"),
            _in("tier", sch.TIERS, "assignment_tier_valid"),
        ]
        indexes = [
            models.Index(fields=["item", "tier", "status"], name="assignment_slots_idx"),
            models.Index(fields=["annotator", "status"], name="assignment_annotator_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} -> {self.annotator_id} ({self.status})"


class HumanAnnotation(models.Model):
    """A human's labels, always in canonical response order (see webapp.scheme)."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="human_annotations")
    # A platform user, or (for imported datasets) the source's annotator id.
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="annotations"
    )
    external_annotator = models.CharField(max_length=255, blank=True)
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.PROTECT, related_name="annotation"
    )
    tier = models.CharField(max_length=10, choices=_choices(sch.TIERS), default=AnnotatorProfile.NORMAL)
    preferences = models.JSONField(default=dict, blank=True)
    ranking = models.JSONField(null=True, blank=True)
    ratings = models.JSONField(default=dict, blank=True)
    reasons = models.JSONField(default=dict, blank=True)
    own_reasons = models.JSONField(default=dict, blank=True)
    confidence = models.JSONField(default=dict, blank=True)
    justification = models.TextField(blank=True)
    time_spent = models.FloatField(null=True, blank=True, help_text="Active seconds on the item.")
    flags = models.JSONField(default=list, blank=True)
    imported = models.BooleanField(default=False)
    # When the source dataset says the annotation was made (imports), verbatim.
    external_timestamp = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(annotator__isnull=False) & Q(external_annotator=""))
                | (Q(annotator__isnull=True) & ~Q(external_annotator="")),
                name="annotation_has_one_annotator",
            ),
            models.UniqueConstraint(
                fields=["item", "annotator"], condition=Q(annotator__isnull=False), name="annotation_once_per_user"
            ),
            models.UniqueConstraint(
                fields=["item", "external_annotator"],
                condition=~Q(external_annotator=""),
                name="annotation_once_per_external_annotator",
            ),
            _in("tier", sch.TIERS, "annotation_tier_valid"),
            models.CheckConstraint(
                condition=Q(time_spent__isnull=True) | Q(time_spent__gte=0), name="annotation_time_nonnegative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} by {self.annotator_id or self.external_annotator}"

    def payload(self) -> dict[str, Any]:
        return {
            "preferences": self.preferences,
            "ranking": self.ranking,
            "ratings": {int(k): v for k, v in self.ratings.items()},
            "reasons": self.reasons,
            "own_reasons": self.own_reasons,
            "confidence": self.confidence,
            "justification": self.justification,
            "time_spent": self.time_spent,
            "flags": self.flags,
        }


class AnnotationRevision(models.Model):
    """An earlier version of an edited annotation: edits keep history instead of overwriting it."""

    annotation = models.ForeignKey(HumanAnnotation, on_delete=models.CASCADE, related_name="revisions")
    payload = models.JSONField(help_text="The annotation as it was before the edit (canonical order).")
    edited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"revision of {self.annotation_id} at {self.created_at:%Y-%m-%d %H:%M}"


JUDGE_BACKENDS = ("openai", "transformers-judge", "reward-model", "cdr", "jury", "external")


class Judge(models.Model):
    """An LLM annotator's configuration. `backend` picks the code in annotators/registry.py."""

    OPENAI, GENERATIVE, REWARD_MODEL, DENSITY_RATIO, JURY, EXTERNAL = JUDGE_BACKENDS
    BACKENDS = JUDGE_BACKENDS
    RUNNABLE = (OPENAI, GENERATIVE, REWARD_MODEL, DENSITY_RATIO, JURY)

    name = models.CharField(max_length=200, unique=True)
    backend = models.CharField(max_length=30, choices=_choices(BACKENDS))
    model = models.CharField(max_length=500, blank=True, help_text="Model name, local path or endpoint model id.")
    # Backend settings (base URL, API-key *variable name*, rule...; never the key itself).
    config = models.JSONField(default=dict, blank=True)
    # A jury's judges; empty for every other backend.
    members = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="juries")
    price_prompt_per_m = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal(0), help_text="USD per million prompt tokens."
    )
    price_completion_per_m = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal(0), help_text="USD per million completion tokens."
    )
    # Per endpoint (base URL), across all workers; 0 means no limit.
    requests_per_minute = models.PositiveIntegerField(default=0)
    tokens_per_minute = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            _in("backend", JUDGE_BACKENDS, "judge_backend_valid"),
            models.CheckConstraint(
                condition=Q(price_prompt_per_m__gte=0) & Q(price_completion_per_m__gte=0),
                name="judge_price_nonnegative",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class JudgeRun(models.Model):
    """One judge labelling a project's items: started, watched and cancelled by a manager."""

    QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"
    STATUSES = (QUEUED, RUNNING, DONE, CANCELLED)
    BOTH, GIVEN = "both", "given"
    ORDERS = (BOTH, GIVEN)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judge_runs")
    judge = models.ForeignKey(Judge, on_delete=models.PROTECT, related_name="runs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=10, choices=_choices(STATUSES), default=QUEUED)
    orders = models.CharField(max_length=10, choices=_choices(ORDERS), default=BOTH)
    prompt_version = models.CharField(max_length=64)
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="At most this many not-yet-judged items.")
    chunk_size = models.PositiveIntegerField(default=16)
    items_total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            _in("status", ("queued", "running", "done", "cancelled"), "judgerun_status_valid"),
            _in("orders", ("both", "given"), "judgerun_orders_valid"),
            models.CheckConstraint(condition=Q(chunk_size__gte=1), name="judgerun_chunk_size_positive"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk}: {self.judge_id} on {self.project_id} ({self.status})"


class Judgment(models.Model):
    """One judge's verdict on one item, in one shown order, with one prompt version."""

    PENDING, DONE, FAILED = "pending", "done", "failed"
    STATUSES = (PENDING, DONE, FAILED)
    COMBINED = "combined"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="judgments")
    judge = models.ForeignKey(Judge, on_delete=models.PROTECT, related_name="judgments")
    # The run that (last) asked for it; null for imported judgments.
    run = models.ForeignKey(JudgeRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="judgments")
    # Order shown, as canonical indices joined by "-" ("0-1" is A first, "1-0" swapped);
    # "combined" for the label merged over orders (or over a jury's members, or as imported).
    order = models.CharField(max_length=100)
    prompt_version = models.CharField(max_length=64)
    labels = models.JSONField(default=dict, blank=True, help_text="Canonical order, the project's scale.")
    ranking = models.JSONField(null=True, blank=True)
    # Soft preference per aspect: P(canonical A better), or a reward margin A - B.
    soft = models.JSONField(default=dict, blank=True)
    # Per-aspect order disagreement, jury votes and disagreement, members' labels.
    details = models.JSONField(default=dict, blank=True)
    rationale = models.TextField(blank=True)
    raw_output = models.TextField(blank=True)
    order_inconsistent = models.BooleanField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=_choices(STATUSES), default=PENDING)
    error = models.TextField(blank=True)
    # Whether a failure is worth retrying (API error) rather than final (unparseable output).
    retryable = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item", "judge", "order", "prompt_version"], name="judgment_unique_per_order_and_prompt"
            ),
            _in("status", ("pending", "done", "failed"), "judgment_status_valid"),
            models.CheckConstraint(condition=Q(cost__isnull=True) | Q(cost__gte=0), name="judgment_cost_nonnegative"),
            # A failure is never a label.
            models.CheckConstraint(
                condition=~Q(status="failed") | Q(labels={}, ranking__isnull=True), name="judgment_failed_has_no_label"
            ),
        ]
        indexes = [models.Index(fields=["run", "status"], name="judgment_run_status_idx")]

    def __str__(self) -> str:
        return f"{self.item_id} by {self.judge_id} [{self.order}]"


class ImportJob(models.Model):
    """A file import, run by a Celery worker (uploads) or inline (the command line)."""

    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
    STATUSES = (QUEUED, RUNNING, DONE, FAILED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    path = models.CharField(max_length=1000)
    file_format = models.CharField(max_length=40, default="native")
    update = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=_choices(STATUSES), default=QUEUED)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    # Its task could not be sent (the broker was down): services.dispatch sends it again.
    unsent = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [_in("status", ("queued", "running", "done", "failed"), "importjob_status_valid")]

    def __str__(self) -> str:
        return f"import {self.pk} into {self.project_id} ({self.status})"


class ExportSnapshot(models.Model):
    """A versioned dataset export: what was asked, what was written (with checksums), by which code."""

    RUNNING, DONE, FAILED = "running", "done", "failed"
    STATUSES = (RUNNING, DONE, FAILED)
    FORMATS = ("multipref", "helpsteer2-preference", "trl-preference", "trl-unpaired")
    FILE_TYPES = ("jsonl", "parquet", "hf")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="exports")
    version = models.PositiveIntegerField(help_text="1, 2, ... per project.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    format = models.CharField(max_length=40, choices=_choices(FORMATS))
    file_type = models.CharField(max_length=10, choices=_choices(FILE_TYPES))
    # Everything that decides the rows: label source and rule, judge, aspect, split seed, ties...
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=_choices(STATUSES), default=RUNNING)
    # Directory under EXPORT_DIR holding the files and the dataset card.
    path = models.CharField(max_length=1000, blank=True)
    # [{"name": ..., "bytes": ..., "sha256": ...}] for every file written.
    files = models.JSONField(default=list, blank=True)
    row_count = models.PositiveIntegerField(default=0)
    item_count = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True, help_text="Rows per split and per label source.")
    code_version = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    # Its task could not be sent (the broker was down): services.dispatch sends it again.
    unsent = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="export_version_unique"),
            _in("status", ("running", "done", "failed"), "export_status_valid"),
            _in(
                "format",
                ("multipref", "helpsteer2-preference", "trl-preference", "trl-unpaired"),
                "export_format_valid",
            ),
            _in("file_type", ("jsonl", "parquet", "hf"), "export_file_type_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.project_id} v{self.version} ({self.format}, {self.file_type})"


class RoutingCandidate(models.Model):
    """A candidate hybrid dataset (which items get human labels) and the score a reward model got on it.

    The performance-prediction model learns from these (mixture features -> score). Scores come from
    external GPU jobs (`manage.py record_score`, examples/train_reward_model.py) or the in-platform proxy.
    """

    EXTERNAL, PROXY = "external", "proxy"
    SOURCES = (EXTERNAL, PROXY)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="routing_candidates")
    budget = models.FloatField(help_text="Share of items (0..1] routed to humans.")
    seed = models.IntegerField(default=0)
    strategy = models.CharField(max_length=40, blank=True)
    # Canonical item ids routed to humans in this candidate.
    human_item_ids = models.JSONField(default=list, blank=True)
    # Mixture features: for each item feature, how many human-routed items have it.
    mixture = models.JSONField(default=dict, blank=True)
    export = models.ForeignKey(ExportSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    score = models.FloatField(null=True, blank=True)
    score_source = models.CharField(max_length=10, choices=_choices(SOURCES), blank=True)
    metric = models.CharField(max_length=100, blank=True, help_text="What the score measures, e.g. pairwise_accuracy.")
    scored_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(budget__gt=0) & Q(budget__lte=1), name="candidate_budget_share"),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | ~Q(score_source=""), name="candidate_score_has_source"
            ),
        ]

    def __str__(self) -> str:
        return f"candidate {self.pk} of {self.project_id} (budget {self.budget})"


class RoutingRun(models.Model):
    """One routing decision for a project: which items go to humans, by which strategy, and why."""

    RUNNING, DONE, FAILED = "running", "done", "failed"
    STATUSES = (RUNNING, DONE, FAILED)
    STRATEGIES = ("random", "ai-disagreement", "error-model", "ppm-simulated", "ppm-topk")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="routing_runs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    strategy = models.CharField(max_length=20, choices=_choices(STRATEGIES))
    budget = models.FloatField(help_text="As asked: a share of the items (0..1] or a number of items.")
    budget_n = models.PositiveIntegerField(default=0, help_text="Items routed to humans.")
    seed = models.IntegerField(default=0)
    n_candidates = models.PositiveIntegerField(default=1024)
    status = models.CharField(max_length=10, choices=_choices(STATUSES), default=RUNNING)
    # Budget used, predicted score, cost, the features that drove the choice, the models' CV reports.
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            _in("status", ("running", "done", "failed"), "routingrun_status_valid"),
            _in(
                "strategy",
                ("random", "ai-disagreement", "error-model", "ppm-simulated", "ppm-topk"),
                "routingrun_strategy_valid",
            ),
            models.CheckConstraint(condition=Q(budget__gt=0), name="routingrun_budget_positive"),
        ]

    def __str__(self) -> str:
        return f"routing {self.pk} of {self.project_id} ({self.strategy}, {self.budget})"


class ApiToken(models.Model):
    """A bearer token for the HTTP API. Only its sha256 is stored; the token is shown once, when made."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    key_hash = models.CharField(max_length=64, unique=True, help_text="sha256 hex of the token.")
    prefix = models.CharField(max_length=8, help_text="The token's first 8 characters, to recognise it.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}... ({self.name or 'token'}) of {self.user_id}"


class RoutingJob(models.Model):
    """A background routing job and its progress: metadata tagging of items, or proxy scoring of candidates.

    ``total`` is fixed when the job starts (the items or candidates it will handle); ``done`` and
    ``failed`` count what it handled, in the same transaction as the results, so a job that runs twice
    (a redelivered task) never counts one thing twice. At most one job of a kind is queued or running
    per project.
    """

    TAGGING, PROXY = "tagging", "proxy"
    KINDS = (TAGGING, PROXY)
    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
    STATUSES = (QUEUED, RUNNING, DONE, FAILED)
    ACTIVE = (QUEUED, RUNNING)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="routing_jobs")
    kind = models.CharField(max_length=10, choices=_choices(KINDS))
    # Tagging: the judge that tags. Proxy scoring: the judge whose verdicts are the AI labels (None: the only one).
    judge = models.ForeignKey(Judge, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=10, choices=_choices(STATUSES), default=QUEUED)
    force = models.BooleanField(default=False, help_text="Redo items or candidates that have tags or scores.")
    # What the job works on and how: item_ids or candidate_ids, the prompt version, per-candidate failures.
    options = models.JSONField(default=dict, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            _in("kind", ("tagging", "proxy"), "routingjob_kind_valid"),
            _in("status", ("queued", "running", "done", "failed"), "routingjob_status_valid"),
            models.CheckConstraint(
                condition=Q(done__lte=models.F("total") - models.F("failed")), name="routingjob_counts_within_total"
            ),
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(status__in=("queued", "running")),
                name="routingjob_one_active_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} of {self.project_id} ({self.status}, {self.done + self.failed}/{self.total})"

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def percent(self) -> int:
        return round(100 * (self.done + self.failed) / self.total) if self.total else 100


class GoldItem(models.Model):
    """An item with a known answer, set by a manager: mixed into annotators' work to measure their accuracy.

    A gold item is never a regular item: the queue, exports and routing leave it out (services/gold.py). Its
    answer is either per-aspect preferences on the project's scale (canonical order) or the canonical index
    of the better response (pairwise: the first aspect's side; ranking: the response ranked first).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_items")
    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="gold")
    preferences = models.JSONField(default=dict, blank=True, help_text="{aspect: label}, canonical order.")
    preferred = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Canonical index: 0 is A.")
    # Part of the project's qualification test, asked in `position` order (then by item id).
    qualification = models.BooleanField(default=False)
    position = models.PositiveIntegerField(default=0)
    note = models.TextField(blank=True, help_text="Why this is the answer (managers only).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "-qualification", "position", "item_id"]
        constraints = [
            # Exactly one form of answer.
            models.CheckConstraint(
                condition=(Q(preferred__isnull=True) & ~Q(preferences={}))
                | (Q(preferred__isnull=False) & Q(preferences={})),
                name="golditem_one_answer",
            ),
        ]
        indexes = [models.Index(fields=["project", "qualification", "position"], name="golditem_project_idx")]

    def __str__(self) -> str:
        return f"gold {self.item_id}{' (qualification)' if self.qualification else ''}"


class GoldResult(models.Model):
    """An annotator's submitted answer on a gold item, scored against the gold answer when submitted."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_results")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="gold_results")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="gold_results")
    annotation = models.OneToOneField(
        HumanAnnotation, null=True, blank=True, on_delete=models.SET_NULL, related_name="gold_result"
    )
    correct = models.BooleanField()
    # Per aspect (or "preferred"): {"gold": ..., "given": ..., "correct": bool}.
    details = models.JSONField(default=dict, blank=True)
    qualification = models.BooleanField(default=False, help_text="Answered in the qualification test.")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]
        constraints = [models.UniqueConstraint(fields=["annotator", "item"], name="goldresult_once_per_annotator")]
        indexes = [models.Index(fields=["project", "annotator", "at"], name="goldresult_project_idx")]

    def __str__(self) -> str:
        return f"{self.annotator_id} on gold {self.item_id}: {'right' if self.correct else 'wrong'}"


class QualificationAttempt(models.Model):
    """One annotator's run through a project's qualification test: started with its first item, finished
    (scored, passed or not) once every qualification item was answered or skipped, or by a manager's override."""

    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="qualification_attempts")
    pass_mark = models.FloatField()
    n_items = models.PositiveIntegerField(default=0)
    n_correct = models.PositiveIntegerField(default=0)
    score = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(null=True, blank=True)
    # A manager who passed the annotator by hand (the score, if any, stays as it was).
    overridden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["membership"], condition=Q(finished_at__isnull=True), name="qualification_one_open_attempt"
            ),
            models.CheckConstraint(condition=Q(pass_mark__gte=0) & Q(pass_mark__lte=1), name="qualification_pass_mark"),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | (Q(score__gte=0) & Q(score__lte=1)), name="qualification_score_share"
            ),
            models.CheckConstraint(condition=Q(n_correct__lte=models.F("n_items")), name="qualification_counts"),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True, passed__isnull=True)
                | Q(finished_at__isnull=False, passed__isnull=False),
                name="qualification_finished_has_outcome",
            ),
        ]

    def __str__(self) -> str:
        return f"qualification of {self.membership_id}: {self.score} ({self.passed})"

"""Writes for projects and memberships."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils.text import slugify

from webapp import scheme as sch
from webapp.models import HumanAnnotation, Judgment, Membership, Project, Response

Problem = tuple[str, str]  # (field, message)


class ProjectError(ValueError):
    """What is wrong: `problems` holds (field, message) pairs; the message joins them ("field: message; ...")."""

    def __init__(self, message: str | list[Problem]):
        if isinstance(message, list):
            self.problems: list[Problem] = list(message)
            message = "; ".join(f"{f}: {m}" if f else m for f, m in self.problems)
        else:
            field, sep, text = message.partition(": ")
            self.problems = [(field, text)] if sep and " " not in field else [("", message)]
        super().__init__(message)


def create_project(
    *,
    slug: str,
    name: str = "",
    kind: str = sch.PAIRWISE,
    scale: str = sch.LIKERT5,
    aspects: list[str] | None = None,
    reasons: dict[str, list[str]] | None = None,
    rating_attributes: list[str] | None = None,
    guidelines: str = "",
    state: str = Project.ACTIVE,
    **options: Any,
) -> Project:
    """Create a project after checking its scheme; raises ProjectError naming each bad field."""
    aspects = list(aspects) if aspects is not None else list(sch.DEFAULT_ASPECTS)  # [] is an error, not "default"
    problems = sch.validate_scheme_config(
        kind=kind, scale=scale, aspects=aspects, reasons=reasons or {}, rating_attributes=rating_attributes or []
    )
    if slugify(slug) != slug or not slug:
        problems.append(("slug", f"{slug!r} is not a slug (lowercase letters, digits, '-' and '_')"))
    if state not in Project.STATES:
        problems.append(("state", f"{state!r} is not one of {', '.join(Project.STATES)}"))
    if "cost_per_human_annotation" in options:
        try:
            options["cost_per_human_annotation"] = Decimal(str(options["cost_per_human_annotation"]))
        except InvalidOperation:
            problems.append(("cost_per_human_annotation", "not a number"))
    for key in ("overlap_normal", "overlap_expert", "human_budget", "justification_min_length"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            problems.append((key, "must be a non-negative integer"))
    if problems:
        raise ProjectError(problems)
    try:
        with transaction.atomic():
            return Project.objects.create(
                slug=slug,
                name=name or slug,
                kind=kind,
                scale=scale,
                aspects=aspects,
                reasons=reasons or {},
                rating_attributes=rating_attributes or [],
                guidelines=guidelines,
                state=state,
                **options,
            )
    except IntegrityError as exc:
        if Project.objects.filter(slug=slug).exists():
            raise ProjectError(f"slug: a project {slug!r} already exists") from None
        raise ProjectError(str(exc)) from None


def add_member(project: Project, user: Any, role: str) -> Membership:
    if role not in Membership.ROLES:
        raise ProjectError(f"role: {role!r} is not one of {', '.join(Membership.ROLES)}")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


# --- the manager console: project settings from a form, edits, state, memberships ------------------------

# The scheme fields that annotations are made against: they may not change once a project has labels.
LOCKED_WITH_LABELS = ("kind", "scale", "aspects")
# What the settings form edits (the slug only when the project is new: URLs and exports name it).
SETTINGS_FIELDS = (
    *("name", "guidelines", "kind", "scale", "aspects", "reasons", "rating_attributes"),
    *("justification_required", "justification_min_length", "ask_confidence", "allow_ties"),
    *("overlap_normal", "overlap_expert", "human_budget", "cost_per_human_annotation"),
)
MAX_GUIDELINES_CHARS = 100_000
MAX_OVERLAP = 100
MAX_COST = Decimal("1000000")
_NAME_LENGTH = Project._meta.get_field("name").max_length or 200
_SLUG_LENGTH = Project._meta.get_field("slug").max_length or 100


class FormData(Protocol):
    def get(self, key: str, default: Any = ...) -> Any: ...

    def getlist(self, key: str) -> list[str]: ...


def project_settings(project: Project) -> dict[str, Any]:
    """The project's settings, as parse_settings_form returns them."""
    return {name: getattr(project, name) for name in SETTINGS_FIELDS}


def default_settings() -> dict[str, Any]:
    """A new project's settings: the model's defaults."""
    return project_settings(Project())


def aspects_text(aspects: list[str]) -> str:
    return ", ".join(aspects)


def reasons_text(reasons: dict[str, list[str]]) -> str:
    """The reasons field's text: one `aspect: reason` line per reason."""
    return "\n".join(f"{aspect}: {reason}" for aspect, listed in reasons.items() for reason in listed)


def settings_form_values(values: dict[str, Any], slug: str = "") -> dict[str, Any]:
    """Settings as the form shows them (text for lists, strings for numbers)."""
    cost = values["cost_per_human_annotation"]
    return {
        **values,
        "slug": slug,
        "aspects": aspects_text(values["aspects"]),
        "reasons": reasons_text(values["reasons"]),
        "human_budget": "" if values["human_budget"] is None else str(values["human_budget"]),
        "cost_per_human_annotation": format(Decimal(cost).normalize(), "f") if cost is not None else "0",
    }


def _split_aspects(text: str) -> list[str]:
    return [a.strip() for a in text.replace("\n", ",").split(",") if a.strip()]


def _parse_reasons(text: str, problems: list[Problem]) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        aspect, sep, reason = line.partition(":")
        if not sep or not aspect.strip() or not reason.strip():
            problems.append(
                ("reasons", f"line {number}: write `aspect: reason` (one reason a line), not {line.strip()!r}")
            )
            continue
        listed = reasons.setdefault(aspect.strip(), [])
        if reason.strip() in listed:
            problems.append(("reasons", f"line {number}: {reason.strip()!r} is listed twice for {aspect.strip()!r}"))
        else:
            listed.append(reason.strip())
    return reasons


def _whole(data: FormData, key: str, problems: list[Problem], *, maximum: int, blank: int | None) -> int | None:
    raw = (data.get(key) or "").strip()
    if not raw:
        if blank is None and key != "human_budget":
            problems.append((key, "required: a whole number"))
        return blank
    try:
        value = int(raw)
    except ValueError:
        problems.append((key, f"{raw!r} is not a whole number"))
        return blank
    if not 0 <= value <= maximum:
        problems.append((key, f"must be between 0 and {maximum:,}"))
        return blank
    return value


def parse_settings_form(data: FormData, *, new: bool) -> tuple[dict[str, Any], list[Problem]]:
    """The settings form's values, typed (with the slug when `new`), and its problems by field.

    Checks the form's syntax and the scheme with the shared validator (webapp.scheme.validate_scheme_config);
    what depends on the database (a slug taken, a scheme locked by labels) is create's and update's to check.
    A field with a problem keeps a value of the right type (its default), so that a preview can still show.
    """
    problems: list[Problem] = []
    defaults = default_settings()
    values: dict[str, Any] = {}
    values["name"] = (data.get("name") or "").strip()
    if new:
        values["slug"] = (data.get("slug") or "").strip() or slugify(values["name"])[:_SLUG_LENGTH]
    values["guidelines"] = (data.get("guidelines") or "").replace("\r\n", "\n")
    values["kind"] = (data.get("kind") or "").strip()
    values["scale"] = (data.get("scale") or "").strip()
    values["aspects"] = _split_aspects(data.get("aspects") or "")
    values["reasons"] = _parse_reasons(data.get("reasons") or "", problems)
    values["rating_attributes"] = [a for a in sch.RATING_ATTRIBUTES if a in data.getlist("rating_attributes")]
    unknown = [a for a in data.getlist("rating_attributes") if a not in sch.RATING_ATTRIBUTES]
    for flag in ("justification_required", "ask_confidence", "allow_ties"):
        values[flag] = data.get(flag) in ("on", "1", "true", "yes")
    values["justification_min_length"] = _whole(data, "justification_min_length", problems, maximum=10_000, blank=0)
    values["overlap_normal"] = _whole(data, "overlap_normal", problems, maximum=MAX_OVERLAP, blank=None)
    values["overlap_expert"] = _whole(data, "overlap_expert", problems, maximum=MAX_OVERLAP, blank=None)
    values["human_budget"] = _whole(data, "human_budget", problems, maximum=2**31 - 1, blank=None)
    raw_cost = (data.get("cost_per_human_annotation") or "").strip() or "0"
    try:
        cost = Decimal(raw_cost)
        if not cost.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        problems.append(("cost_per_human_annotation", f"{raw_cost!r} is not a number"))
        cost = defaults["cost_per_human_annotation"]
    else:
        if not Decimal(0) <= cost < MAX_COST:
            problems.append(("cost_per_human_annotation", f"must be at least 0 and below {MAX_COST:,}"))
            cost = defaults["cost_per_human_annotation"]
        elif cost != cost.quantize(Decimal("0.0001")):
            problems.append(("cost_per_human_annotation", "at most 4 decimal places"))
            cost = defaults["cost_per_human_annotation"]
    values["cost_per_human_annotation"] = cost
    for key in ("overlap_normal", "overlap_expert"):
        if values[key] is None:
            values[key] = defaults[key]
    problems.extend(settings_problems(values, new=new))
    if unknown:
        problems.append(
            ("rating_attributes", f"{', '.join(map(repr, unknown))}: not one of {', '.join(sch.RATING_ATTRIBUTES)}")
        )
    return values, problems


def settings_problems(values: dict[str, Any], *, new: bool) -> list[Problem]:
    """Problems of typed settings that need no database: the shared scheme validator's, and the name's and slug's."""
    problems = sch.validate_scheme_config(
        kind=values["kind"],
        scale=values["scale"],
        aspects=values["aspects"],
        reasons=values["reasons"],
        rating_attributes=values["rating_attributes"],
    )
    if not values["name"]:
        problems.append(("name", "required"))
    elif len(values["name"]) > _NAME_LENGTH:
        problems.append(("name", f"at most {_NAME_LENGTH} characters"))
    if new:
        slug = values.get("slug", "")
        if not slug or slugify(slug) != slug:
            problems.append(("slug", f"{slug!r} is not a slug (lowercase letters, digits, '-' and '_')"))
        elif len(slug) > _SLUG_LENGTH:
            problems.append(("slug", f"at most {_SLUG_LENGTH} characters"))
    if len(values["guidelines"]) > MAX_GUIDELINES_CHARS:
        problems.append(("guidelines", f"at most {MAX_GUIDELINES_CHARS:,} characters"))
    if values["justification_required"] and values["justification_min_length"] > 10_000:
        problems.append(("justification_min_length", "at most 10,000"))
    return problems


def label_counts(project: Project) -> tuple[int, int]:
    """The project's human annotations and LLM judgments that hold labels (made against its scheme)."""
    humans = HumanAnnotation.objects.filter(item__project=project).count()
    judgments = Judgment.objects.filter(item__project=project, status=Judgment.DONE).count()
    return humans, judgments


def create_managed_project(creator: Any, values: dict[str, Any]) -> Project:
    """Create a draft project from the settings form's values; the creator becomes its manager.

    Raises ProjectError naming each bad field; nothing is written then.
    """
    problems = settings_problems(values, new=True)
    if problems:
        raise ProjectError(problems)
    fields = {k: values[k] for k in SETTINGS_FIELDS}
    with transaction.atomic():
        project = create_project(slug=values["slug"], state=Project.DRAFT, **fields)
        add_member(project, creator, Membership.MANAGER)
    return project


def update_project(project: Project, values: dict[str, Any]) -> list[str]:
    """Save the settings form's values; returns the fields that changed.

    Kind, scale and aspects may not change once the project has labels (human annotations, or LLM
    judgments), which were made against them; a pairwise project's items need exactly two responses.
    Raises ProjectError naming each bad field; nothing is written then.
    """
    problems = settings_problems(values, new=False)
    if problems:
        raise ProjectError(problems)
    with transaction.atomic():
        # One edit at a time, and none while an import (which locks the row too) writes items.
        current = Project.objects.select_for_update().get(pk=project.pk)
        changed = [k for k in SETTINGS_FIELDS if getattr(current, k) != values[k]]
        locked = [k for k in LOCKED_WITH_LABELS if k in changed]
        if locked:
            humans, judgments = label_counts(current)
            if humans or judgments:
                held = " and ".join(
                    f"{n:,} {what}"
                    for n, what in ((humans, "human annotation(s)"), (judgments, "LLM judgment(s)"))
                    if n
                )
                for key in locked:
                    problems.append(
                        (
                            key,
                            f"cannot change {key} from {_shown(getattr(current, key))} to {_shown(values[key])}: "
                            f"the project has {held}, which would no longer match it",
                        )
                    )
        if "kind" in changed and values["kind"] == sch.PAIRWISE and not problems:
            odd = (
                Response.objects.filter(item__project=current)
                .values("item_id")
                .annotate(n=Count("id"))
                .exclude(n=2)
                .count()
            )
            if odd:
                problems.append(
                    ("kind", f"{odd:,} item(s) do not have exactly 2 responses, as a pairwise project needs")
                )
        if problems:
            raise ProjectError(problems)
        for key in changed:
            setattr(current, key, values[key])
        if changed:
            current.save(update_fields=[*changed, "updated_at"])
    for key in SETTINGS_FIELDS:
        setattr(project, key, getattr(current, key))
    project.updated_at = current.updated_at
    return changed


def _shown(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def set_state(project: Project, state: str) -> Project:
    """Open (active), close or return a project to draft. Annotators take work only from active projects."""
    if state not in Project.STATES:
        raise ProjectError([("state", f"{state!r} is not one of {', '.join(Project.STATES)}")])
    project.state = state
    project.save(update_fields=["state", "updated_at"])
    return project


def set_membership(project: Project, user: Any, *, role: str, quota: int | None) -> Membership:
    """Add the user to the project, or change their role and quota there (quota None: as the queue offers)."""
    problems: list[Problem] = []
    if role not in Membership.ROLES:
        problems.append(("role", f"{role!r} is not one of {', '.join(Membership.ROLES)}"))
    if quota is not None and quota < 0:
        problems.append(("quota", "must be 0 or more"))
    if problems:
        raise ProjectError(problems)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()  # memberships change one at a time
        current = Membership.objects.filter(project=project, user=user).first()
        if current is not None and current.role == Membership.MANAGER and role != Membership.MANAGER:
            _keep_a_manager(project, user)
        membership, _ = Membership.objects.update_or_create(
            project=project, user=user, defaults={"role": role, "quota": quota}
        )
    return membership


def remove_member(project: Project, user: Any) -> None:
    """Take the user out of the project (their annotations stay). The last manager stays."""
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        membership = Membership.objects.filter(project=project, user=user).first()
        if membership is None:
            raise ProjectError([("project", f"{getattr(user, 'username', user)} is not a member of {project.slug}")])
        if membership.role == Membership.MANAGER:
            _keep_a_manager(project, user)
        membership.delete()


def _keep_a_manager(project: Project, leaving: Any) -> None:
    others = Membership.objects.filter(project=project, role=Membership.MANAGER).exclude(user=leaving)
    if not others.exists():
        raise ProjectError([("role", f"{project.slug} would have no manager left: add another manager first")])

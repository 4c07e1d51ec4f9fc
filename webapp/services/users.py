"""Writes for user accounts and annotator profiles."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from webapp import scheme as sch
from webapp.models import AnnotatorProfile, Membership, Project
from webapp.services.projects import add_member

ROLES = ("manager", "annotator")


class UserError(ValueError):
    pass


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def create_user(
    *,
    username: str,
    role: str,
    password: str | None = None,
    tier: str = AnnotatorProfile.NORMAL,
    domains: list[str] | None = None,
    projects: list[str] | None = None,
    email: str = "",
) -> tuple[AbstractUser, str]:
    """Create a manager or annotator; returns the user and the password (generated when not given)."""
    User = get_user_model()
    if role not in ROLES:
        raise UserError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if tier not in sch.TIERS:
        raise UserError(f"tier: {tier!r} is not one of {', '.join(sch.TIERS)}")
    if not username or User.objects.filter(username=username).exists():
        raise UserError(f"username: {username!r} is empty or already taken")
    slugs = projects or []
    found = {p.slug: p for p in Project.objects.filter(slug__in=slugs)}
    missing = [s for s in slugs if s not in found]
    if missing:
        raise UserError(f"projects: no such project(s): {', '.join(missing)}")
    password = password or generate_password()
    try:
        validate_password(password, User(username=username))
    except ValidationError as exc:
        raise UserError("password: " + " ".join(exc.messages)) from None
    with transaction.atomic():
        user = User.objects.create_user(username=username, email=email, password=password)
        AnnotatorProfile.objects.create(user=user, tier=tier, domains=domains or [])
        for slug in slugs:
            add_member(found[slug], user, Membership.MANAGER if role == "manager" else Membership.ANNOTATOR)
    return user, password


# --- the manager console: people ------------------------------------------------------------------

MAX_DOMAINS = 20
MAX_DOMAIN_CHARS = 100


def _problems(exc: ValueError) -> list[tuple[str, str]]:
    """A UserError's or ProjectError's "field: message" as (field, message) pairs."""
    found = getattr(exc, "problems", None)
    if found is not None:
        return list(found)
    field_name, sep, message = str(exc).partition(": ")
    return [(field_name, message)] if sep and " " not in field_name else [("", str(exc))]


class PeopleError(ValueError):
    """What is wrong with a people form: `problems` holds (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))


def parse_domains(text: str) -> list[str]:
    """Expertise domains from a comma-separated text, without repeats (in the order given)."""
    domains: list[str] = []
    for part in text.replace("\n", ",").split(","):
        domain = " ".join(part.split())
        if domain and domain not in domains:
            domains.append(domain)
    return domains


def _domain_problems(domains: list[str]) -> list[tuple[str, str]]:
    if len(domains) > MAX_DOMAINS:
        return [("domains", f"at most {MAX_DOMAINS} domains")]
    long = [d for d in domains if len(d) > MAX_DOMAIN_CHARS]
    return [("domains", f"{long[0][:20]!r}…: at most {MAX_DOMAIN_CHARS} characters a domain")] if long else []


def create_member(
    *,
    username: str,
    email: str = "",
    password: str = "",
    tier: str = AnnotatorProfile.NORMAL,
    domains: list[str] | None = None,
    project: Project | None = None,
    role: str = Membership.ANNOTATOR,
    quota: int | None = None,
) -> tuple[AbstractUser, str]:
    """Create an account with its annotator profile, in `project` with `role` and `quota` where given.

    Returns the user and the password (generated when none is given: shown once, never stored in clear).
    Raises PeopleError naming each bad field; nothing is written then.
    """
    from django.contrib.auth.validators import UnicodeUsernameValidator
    from django.core.validators import validate_email

    from webapp.services.projects import ProjectError, set_membership

    User = get_user_model()
    problems: list[tuple[str, str]] = []
    username = username.strip()
    email = email.strip()
    max_length = User._meta.get_field("username").max_length or 150
    if not username:
        problems.append(("username", "required"))
    elif len(username) > max_length:
        problems.append(("username", f"at most {max_length} characters"))
    else:
        try:
            UnicodeUsernameValidator()(username)
        except ValidationError as exc:
            problems.append(("username", " ".join(exc.messages)))
    if email:
        try:
            validate_email(email)
        except ValidationError:
            problems.append(("email", f"{email!r} is not an email address"))
    if tier not in sch.TIERS:
        problems.append(("tier", f"{tier!r} is not one of {', '.join(sch.TIERS)}"))
    if role not in ROLES:
        problems.append(("role", f"{role!r} is not one of {', '.join(ROLES)}"))
    if quota is not None and quota < 0:
        problems.append(("quota", "must be 0 or more"))
    problems.extend(_domain_problems(domains or []))
    if not problems and User.objects.filter(username__iexact=username).exists():
        problems.append(("username", f"{username!r} is taken"))
    if problems:
        raise PeopleError(problems)
    try:
        with transaction.atomic():
            user, password = create_user(
                username=username,
                role=role,
                password=password or None,
                tier=tier,
                domains=domains or [],
                projects=[project.slug] if project is not None else [],
                email=email,
            )
            if project is not None and quota is not None:
                set_membership(project, user, role=role, quota=quota)
    except (UserError, ProjectError) as exc:
        raise PeopleError(_problems(exc)) from None
    return user, password


def set_profile(user: Any, *, tier: str, domains: list[str]) -> AnnotatorProfile:
    """Set an annotator's tier (which overlap slots they fill) and expertise domains."""
    problems = [] if tier in sch.TIERS else [("tier", f"{tier!r} is not one of {', '.join(sch.TIERS)}")]
    problems.extend(_domain_problems(domains))
    if problems:
        raise PeopleError(problems)
    profile, _ = AnnotatorProfile.objects.update_or_create(user=user, defaults={"tier": tier, "domains": domains})
    return profile


def set_active(user: Any, active: bool) -> None:
    """Deactivate (no login, no work) or reactivate an account: the user's is_active and profile's active."""
    with transaction.atomic():
        user.is_active = active
        user.save(update_fields=["is_active"])
        AnnotatorProfile.objects.update_or_create(user=user, defaults={"active": active})

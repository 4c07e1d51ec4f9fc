"""Writes for user accounts and annotator profiles."""

from __future__ import annotations

import secrets

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

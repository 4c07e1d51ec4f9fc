"""Management commands: create_project, create_user and demo_setup, run as an operator runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from webapp.models import AnnotatorProfile, HumanAnnotation, Item, Judgment, Membership, Project

ROOT = Path(__file__).resolve().parent.parent
User = get_user_model()
pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def printed_password(output: str) -> str:
    match = re.search(r"^password: (\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


# --- create_project -------------------------------------------------------------------------


def test_create_project_with_defaults():
    output = run("create_project", "helpsteer")
    project = Project.objects.get(slug="helpsteer")
    assert output.strip() == (
        "created project helpsteer (pairwise, likert5, aspects: overall, helpful, truthful, harmless)"
    )
    assert project.name == "helpsteer"
    assert (project.kind, project.scale) == ("pairwise", "likert5")
    assert project.aspects == ["overall", "helpful", "truthful", "harmless"]
    assert project.state == Project.ACTIVE
    assert (project.overlap_normal, project.overlap_expert) == (2, 0)
    assert project.justification_required is False
    assert project.allow_ties is False


def test_create_project_with_a_ranking_kind_strength_scale_and_own_aspects(tmp_path):
    guidelines = tmp_path / "guide.md"
    guidelines.write_text("# Rank them\nBest first.", encoding="utf-8")
    run(
        "create_project",
        "ranked",
        "--name",
        "Ranked answers",
        "--kind",
        "ranking",
        "--scale",
        "strength7",
        "--aspects",
        " overall , style ,",
        "--ratings",
        "helpfulness,verbosity",
        "--guidelines-file",
        str(guidelines),
        "--justification-min-length",
        "15",
        "--overlap-normal",
        "3",
        "--overlap-expert",
        "1",
        "--budget",
        "500",
        "--cost",
        "0.35",
        "--allow-ties",
    )
    project = Project.objects.get(slug="ranked")
    assert project.name == "Ranked answers"
    assert (project.kind, project.scale) == ("ranking", "strength7")
    assert project.aspects == ["overall", "style"]
    assert project.rating_attributes == ["helpfulness", "verbosity"]
    assert project.guidelines == "# Rank them\nBest first."
    assert project.justification_required is True
    assert project.justification_min_length == 15
    assert (project.overlap_normal, project.overlap_expert, project.human_budget) == (3, 1, 500)
    assert str(project.cost_per_human_annotation) == "0.3500"
    assert project.allow_ties is True


def test_create_project_refuses_a_slug_that_is_taken():
    run("create_project", "dup")
    with pytest.raises(CommandError, match="slug: a project 'dup' already exists"):
        run("create_project", "dup", "--name", "Another")
    assert Project.objects.get(slug="dup").name == "dup"


@pytest.mark.parametrize(
    ("aspects", "message"),
    [
        ("overall,overall", "aspects must be unique"),
        ("over all", "'over all' must be letters"),
        (",,", "at least one aspect is needed"),
    ],
)
def test_create_project_refuses_bad_aspects(aspects, message):
    with pytest.raises(CommandError, match=message):
        run("create_project", "bad-aspects", "--aspects", aspects)
    assert not Project.objects.filter(slug="bad-aspects").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Not A Slug"], "is not a slug"),
        (["ok", "--ratings", "humour"], "'humour' is not one of"),
        (["ok", "--cost", "cheap"], "cost_per_human_annotation: not a number"),
        (["ok", "--overlap-normal", "-1"], "overlap_normal: must be a non-negative integer"),
        (["ok", "--guidelines-file", "/nonexistent/guide.md"], "--guidelines-file"),
    ],
)
def test_create_project_refuses_other_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_project", *args)
    assert not Project.objects.exists()


def test_create_project_refuses_a_kind_it_does_not_know():
    with pytest.raises(CommandError, match="invalid choice: 'triplet'"):
        run("create_project", "x", "--kind", "triplet")


# --- create_user ----------------------------------------------------------------------------


@pytest.fixture
def two_projects():
    run("create_project", "alpha")
    run("create_project", "beta")
    return Project.objects.get(slug="alpha"), Project.objects.get(slug="beta")


def test_create_user_makes_a_manager_who_joins_projects_as_manager(two_projects):
    assert {p.slug for p in two_projects} == {"alpha", "beta"}
    output = run("create_user", "mia", "--role", "manager", "--projects", "alpha,beta", "--email", "mia@example.org")
    user = User.objects.get(username="mia")
    assert output.startswith("created manager mia\n")
    assert user.email == "mia@example.org"
    assert not user.is_superuser
    assert not user.is_staff
    roles = dict(Membership.objects.filter(user=user).values_list("project__slug", "role"))
    assert roles == {"alpha": Membership.MANAGER, "beta": Membership.MANAGER}


def test_create_user_makes_an_expert_annotator_with_domains(two_projects):
    run(
        "create_user",
        "ann",
        "--role",
        "annotator",
        "--tier",
        "expert",
        "--domains",
        "law, medicine ,",
        "--projects",
        "beta",
    )
    user = User.objects.get(username="ann")
    profile = AnnotatorProfile.objects.get(user=user)
    assert profile.tier == "expert"
    assert profile.domains == ["law", "medicine"]
    assert profile.active
    memberships = list(Membership.objects.filter(user=user).values_list("project__slug", "role"))
    assert memberships == [("beta", Membership.ANNOTATOR)]


def test_create_user_without_projects_joins_none_and_is_a_normal_annotator(db):
    run("create_user", "solo", "--role", "annotator")
    user = User.objects.get(username="solo")
    assert user.annotator_profile.tier == "normal"
    assert user.annotator_profile.domains == []
    assert not Membership.objects.filter(user=user).exists()


def test_the_printed_generated_password_logs_in(db):
    output = run("create_user", "gen", "--role", "annotator")
    password = printed_password(output)
    assert len(password) >= 10
    assert authenticate(username="gen", password=password) == User.objects.get(username="gen")
    assert authenticate(username="gen", password=password + "x") is None


def test_each_generated_password_is_different(db):
    first = printed_password(run("create_user", "one", "--role", "annotator"))
    second = printed_password(run("create_user", "two", "--role", "annotator"))
    assert first != second


def test_a_password_from_the_environment_is_used_and_never_printed(db, monkeypatch):
    secret = "Plum-tree-harbour-91"
    monkeypatch.setenv("NEW_USER_PASSWORD", secret)
    out, err = StringIO(), StringIO()
    call_command(
        "create_user", "envy", "--role", "manager", "--password-env", "NEW_USER_PASSWORD", stdout=out, stderr=err
    )
    assert out.getvalue() == "created manager envy\n"
    assert secret not in out.getvalue() + err.getvalue()
    assert "password" not in out.getvalue()
    assert authenticate(username="envy", password=secret) is not None


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_or_empty_password_variable_is_an_error_and_no_user_is_made(db, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("MISSING_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("MISSING_PASSWORD", value)
    with pytest.raises(CommandError, match="MISSING_PASSWORD is not set or empty"):
        run("create_user", "nopw", "--role", "annotator", "--password-env", "MISSING_PASSWORD")
    assert not User.objects.filter(username="nopw").exists()


def test_a_weak_password_from_the_environment_is_refused(db, monkeypatch):
    monkeypatch.setenv("WEAK_PASSWORD", "password")
    with pytest.raises(CommandError, match="password: "):
        run("create_user", "weak", "--role", "annotator", "--password-env", "WEAK_PASSWORD")
    assert not User.objects.filter(username="weak").exists()


def test_an_unknown_project_is_an_error_and_no_user_is_made(two_projects):
    with pytest.raises(CommandError, match="no such project\\(s\\): gamma"):
        run("create_user", "lost", "--role", "annotator", "--projects", "alpha,gamma")
    assert not User.objects.filter(username="lost").exists()
    assert not Membership.objects.exists()
    assert not AnnotatorProfile.objects.exists()


def test_a_username_that_is_taken_is_refused(db):
    run("create_user", "taken", "--role", "annotator")
    with pytest.raises(CommandError, match="'taken' is empty or already taken"):
        run("create_user", "taken", "--role", "manager")
    assert User.objects.filter(username="taken").count() == 1
    assert AnnotatorProfile.objects.count() == 1


def test_create_user_refuses_an_unknown_role_or_tier(db):
    with pytest.raises(CommandError, match="invalid choice: 'owner'"):
        run("create_user", "x", "--role", "owner")
    with pytest.raises(CommandError, match="invalid choice: 'guru'"):
        run("create_user", "x", "--role", "annotator", "--tier", "guru")
    assert not User.objects.exists()


def test_create_user_from_the_shell_fails_with_a_message_on_stderr_for_an_unknown_project(db):
    db_settings = connection.settings_dict
    auth = db_settings["USER"] + (f":{db_settings['PASSWORD']}" if db_settings["PASSWORD"] else "")
    url = f"postgres://{auth}@{db_settings['HOST'] or 'localhost'}:{db_settings['PORT'] or 5432}/{db_settings['NAME']}"
    env = {**os.environ, "HYBRIDPREF_MODE": "test", "DATABASE_URL": url}
    proc = subprocess.run(
        [sys.executable, "manage.py", "create_user", "shell-user", "--role", "annotator", "--projects", "no-such"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "CommandError: projects: no such project(s): no-such" in proc.stderr
    assert "password" not in proc.stdout
    assert not User.objects.filter(username="shell-user").exists()


# --- demo_setup -----------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_setup_builds_the_demo_once_and_a_second_run_adds_nothing(settings, tmp_path):
    settings.DATA_DIR = tmp_path

    first = run("demo_setup")
    project = Project.objects.get(slug="pandalm-demo")
    assert "demo project pandalm-demo: 999 items (999 new, 0 unchanged)" in first
    assert project.items.count() == 999
    logins = dict(re.findall(r"^  (manager|annotator|expert)\s+(\S+)\s", first, re.MULTILINE))
    assert set(logins) == {"manager", "annotator", "expert"}
    for username, password in logins.items():
        assert authenticate(username=username, password=password) is not None, username

    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"manager": "manager", "annotator": "annotator", "expert": "annotator"}
    assert AnnotatorProfile.objects.get(user__username="expert").tier == "expert"
    assert (tmp_path / "demo-logins.json").stat().st_mode & 0o777 == 0o600
    counts = (
        Project.objects.count(),
        Item.objects.count(),
        HumanAnnotation.objects.count(),
        Judgment.objects.count(),
        User.objects.count(),
        Membership.objects.count(),
        AnnotatorProfile.objects.count(),
    )
    assert counts[2] > 0  # PandaLM's human labels came with the items
    assert counts[3] > 0  # and so did its LLM labels

    second = run("demo_setup")
    assert "999 items (0 new, 999 unchanged)" in second
    assert dict(re.findall(r"^  (manager|annotator|expert)\s+(\S+)\s", second, re.MULTILINE)) == logins
    assert (
        Project.objects.count(),
        Item.objects.count(),
        HumanAnnotation.objects.count(),
        Judgment.objects.count(),
        User.objects.count(),
        Membership.objects.count(),
        AnnotatorProfile.objects.count(),
    ) == counts
    for username, password in logins.items():
        assert authenticate(username=username, password=password) is not None, username

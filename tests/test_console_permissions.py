"""The manager console's permission matrix: every new URL, for each kind of visitor.

Anonymous visitors go to the login page; annotators get 403; a manager of another project gets 403 for
this project's pages and 404 for its people; the project's manager and an admin get the page (or their
write done). A refused write changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.factories import AnnotatorProfileFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.models import AnnotatorProfile, ImportJob, Membership, Project
from webapp.services.uploads import stage_upload

pytestmark = pytest.mark.django_db

GOOD_ROW = b'{"id": "n-1", "prompt": "Say hi.", "responses": [{"text": "Hi."}, {"text": "Hello!"}]}\n'


@pytest.fixture(autouse=True)
def _isolated(settings: Any, tmp_path: Path) -> None:
    settings.UPLOAD_DIR = tmp_path / "uploads"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(project: Project, manager: Any, annotator: Any) -> dict[str, Any]:
    """The project (prefs) with its manager and annotator, another project with its own manager, and admins."""
    ItemFactory(project=project, external_id="existing")
    AnnotatorProfileFactory(user=annotator)
    other = ProjectFactory(slug="other-project")
    other_manager = UserFactory(username="other-manager")
    MembershipFactory(project=other, user=other_manager, role=Membership.MANAGER)
    admin = UserFactory(username="root", is_superuser=True, is_staff=True)
    staff = UserFactory(username="staffer", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_project"))
    staged = stage_upload(project, manager, SimpleUploadedFile("items.jsonl", GOOD_ROW), "native")
    return {
        "project": project,
        "manager": manager,
        "annotator": annotator,
        "other_manager": other_manager,
        "admin": admin,
        "staff": staff,
        "token": staged.token,
    }


def _requests(w: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, url, data, what the URL is about: 'new', 'project' or 'people'), writes that destroy last."""
    slug, token, person = w["project"].slug, w["token"], w["annotator"].pk
    settings_form = {
        "name": "Prefs renamed",
        "kind": "pairwise",
        "scale": "likert5",
        "aspects": "overall",
        "overlap_normal": "2",
        "overlap_expert": "0",
        "cost_per_human_annotation": "0.5",
    }
    return [
        ("get", "/projects/new/", {}, "new"),
        ("get", "/projects/new/preview", {"aspects": "overall", "kind": "pairwise", "scale": "likert5"}, "new"),
        ("post", "/projects/new/", {**settings_form, "name": "Fresh", "slug": "fresh"}, "new"),
        ("get", f"/p/{slug}/edit/", {}, "project"),
        ("get", f"/p/{slug}/edit/preview", {"aspects": "overall, clarity", "kind": "pairwise"}, "project"),
        ("post", f"/p/{slug}/edit/", settings_form, "project"),
        ("post", f"/p/{slug}/state", {"state": "closed"}, "project"),
        ("get", f"/p/{slug}/upload/", {}, "project"),
        (
            "post",
            f"/p/{slug}/upload/new",
            {"format": "native", "file": SimpleUploadedFile("a.jsonl", GOOD_ROW)},
            "project",
        ),
        ("get", f"/p/{slug}/upload/{token}/", {}, "project"),
        ("post", f"/p/{slug}/upload/{token}/import", {}, "project"),
        ("get", "/people/", {}, "people"),
        (
            "post",
            "/people/new",
            {"username": "newbie", "project": slug, "role": "annotator", "tier": "normal"},
            "people",
        ),
        ("post", "/people/add", {"username": "staffer", "project": slug, "role": "annotator"}, "people"),
        ("get", f"/people/{person}/", {}, "person"),
        ("post", f"/people/{person}/profile", {"tier": "expert", "domains": "law"}, "person"),
        ("post", f"/people/{person}/memberships", {"project": slug, "role": "annotator", "quota": "7"}, "person"),
        ("post", f"/people/{person}/active", {"active": "0"}, "person"),
        ("post", f"/people/{person}/memberships/remove", {"project": slug}, "person"),
    ]


def _send(client: Client, method: str, url: str, data: dict[str, Any]) -> Any:
    return client.get(url, data) if method == "get" else client.post(url, data)


def _snapshot(w: dict[str, Any]) -> dict[str, Any]:
    project = Project.objects.get(pk=w["project"].pk)
    annotator = type(w["annotator"]).objects.get(pk=w["annotator"].pk)
    return {
        "project": (project.name, project.state, project.aspects, str(project.cost_per_human_annotation)),
        "projects": sorted(Project.objects.values_list("slug", flat=True)),
        "memberships": sorted(Membership.objects.values_list("project__slug", "user__username", "role", "quota")),
        "annotator": (annotator.is_active, AnnotatorProfile.objects.get(user=annotator).tier),
        "users": sorted(type(annotator).objects.values_list("username", flat=True)),
        "jobs": ImportJob.objects.count(),
    }


def test_anonymous_visitors_are_sent_to_the_login_page_for_every_console_url(world):
    before = _snapshot(world)
    client = Client()
    for method, url, data, _ in _requests(world):
        response = _send(client, method, url, data)
        assert response.status_code == 302, (method, url)
        assert response.url.startswith("/login/?next="), (method, url)
    assert _snapshot(world) == before


def test_annotators_get_403_for_every_console_url_and_change_nothing(world):
    before = _snapshot(world)
    client = Client()
    client.force_login(world["annotator"])
    for method, url, data, _ in _requests(world):
        assert _send(client, method, url, data).status_code == 403, (method, url)
    assert _snapshot(world) == before


def test_a_manager_of_another_project_gets_403_for_this_project_and_404_for_its_people(world):
    before = _snapshot(world)
    client = Client()
    client.force_login(world["other_manager"])
    expected = {"new": 403, "project": 403, "person": 404}
    for method, url, data, about in _requests(world):
        response = _send(client, method, url, data)
        if about == "people":
            # Their own people list opens; creating or adding someone in this project is refused.
            assert response.status_code == (200 if method == "get" else 403), (method, url)
        else:
            assert response.status_code == expected[about], (method, url)
    assert "annotator1" not in client.get("/people/").content.decode()
    assert _snapshot(world) == before


@pytest.mark.parametrize("who", ["manager", "admin"])
def test_the_projects_manager_and_an_admin_may_use_every_console_url(world, who):
    client = Client()
    client.force_login(world[who])
    for method, url, data, about in _requests(world):
        response = _send(client, method, url, data)
        if about == "new" and who == "manager":
            # A new project needs may_create_projects: a superuser, or staff with the add_project permission.
            assert response.status_code == 403, (method, url)
            continue
        assert response.status_code in (200, 302), (method, url, response.status_code)
        if response.status_code == 302:
            assert not response.url.startswith("/login/"), (method, url)
    after = _snapshot(world)
    assert after["project"][:2] == ("Prefs renamed", "closed")
    assert ("prefs", "newbie", "annotator", None) in after["memberships"]
    assert ("prefs", "staffer", "annotator", None) in after["memberships"]
    assert after["annotator"] == (False, "expert")
    assert not any(m[1] == "annotator1" for m in after["memberships"])  # removed last
    assert after["jobs"] == 1
    assert ("fresh" in after["projects"]) == (who == "admin")


def test_staff_with_the_add_project_permission_may_create_projects(world):
    client = Client()
    client.force_login(world["staff"])
    assert client.get("/projects/new/").status_code == 200
    response = client.post(
        "/projects/new/",
        {
            "name": "Staff project",
            "kind": "pairwise",
            "scale": "likert5",
            "aspects": "overall",
            "overlap_normal": "1",
            "overlap_expert": "0",
        },
    )
    assert response.status_code == 302
    created = Project.objects.get(slug="staff-project")
    assert created.state == Project.DRAFT
    assert Membership.objects.filter(project=created, user=world["staff"], role=Membership.MANAGER).exists()

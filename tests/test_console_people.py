"""People in the console: create annotators, set tiers and domains, memberships, deactivate and reactivate."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.factories import AnnotatorProfileFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.models import AnnotatorProfile, Membership, Project

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def manager_client(manager: Any) -> Client:
    client = Client()
    client.force_login(manager)
    return client


@pytest.fixture
def admin() -> Any:
    return UserFactory(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def admin_client(admin: Any) -> Client:
    client = Client()
    client.force_login(admin)
    return client


def field_error(html: str, field: str) -> str:
    found = re.search(rf'<p class="field-error" id="error-{field}">(.*?)</p>', html, re.S)
    assert found, f"no error shown for {field}"
    return found.group(1)


NEW = {"username": "alice", "email": "alice@example.org", "tier": "expert", "domains": "medicine, law, medicine"}


def test_a_manager_creates_an_annotator_in_their_project_and_sees_the_generated_password_once(manager_client, project):
    response = manager_client.post("/people/new", {**NEW, "project": project.slug, "role": "annotator", "quota": "40"})

    assert response.status_code == 200
    html = response.content.decode()
    password = re.search(r'<code id="new-password">(.*?)</code>', html).group(1)
    assert len(password) >= 12
    assert "no-store" in response["Cache-Control"]  # the page with the password is never cached
    alice = User.objects.get(username="alice")
    assert alice.email == "alice@example.org"
    assert alice.check_password(password)
    assert not alice.is_staff
    assert (alice.annotator_profile.tier, alice.annotator_profile.domains) == ("expert", ["medicine", "law"])
    membership = Membership.objects.get(user=alice)
    assert (membership.project, membership.role, membership.quota) == (project, "annotator", 40)
    assert password not in manager_client.get("/people/").content.decode()  # shown once
    assert Client().login(username="alice", password=password)


def test_a_chosen_password_is_checked_by_the_password_rules(manager_client, project):
    response = manager_client.post("/people/new", {**NEW, "password": "short", "project": project.slug})
    assert response.status_code == 400
    assert "too short" in field_error(response.content.decode(), "password")
    assert not User.objects.filter(username="alice").exists()


def test_bad_fields_are_shown_next_to_each_field(manager_client, project, manager):
    bad = {"username": "bad name!", "email": "not-an-email", "tier": "guru", "quota": "ten", "project": project.slug}
    html = manager_client.post("/people/new", {**bad, "role": "annotator"}).content.decode()
    assert "not a whole number" in field_error(html, "quota")
    html = manager_client.post("/people/new", {**bad, "quota": "", "role": "annotator"}).content.decode()
    assert "Enter a valid username" in field_error(html, "username")
    assert "is not an email address" in field_error(html, "email")
    assert "is not one of normal, expert" in field_error(html, "tier")
    html = manager_client.post("/people/new", {**NEW, "username": "Manager1", "project": project.slug}).content.decode()
    assert "is taken" in field_error(html, "username")
    assert User.objects.count() == 1


def test_a_manager_must_put_a_new_account_in_one_of_their_projects(manager_client, project):
    response = manager_client.post("/people/new", {**NEW, "project": ""})
    assert response.status_code == 400
    assert "choose one of your projects" in field_error(response.content.decode(), "project")
    other = ProjectFactory(slug="not-mine")
    assert manager_client.post("/people/new", {**NEW, "project": other.slug}).status_code == 403
    assert not User.objects.filter(username="alice").exists()


def test_an_admin_may_create_an_account_in_no_project(admin_client):
    assert admin_client.post("/people/new", {**NEW, "project": "", "password": "a-long-enough-pass"}).status_code == 200
    assert not Membership.objects.filter(user__username="alice").exists()


def test_a_manager_sees_only_the_members_of_their_projects_and_an_admin_everyone(
    manager_client, admin_client, project, annotator
):
    outsider = UserFactory(username="outsider")
    MembershipFactory(project=ProjectFactory(slug="far-away"), user=outsider)
    mine = manager_client.get("/people/").content.decode()
    assert "annotator1" in mine
    assert "outsider" not in mine
    assert manager_client.get(f"/people/{outsider.pk}/").status_code == 404
    everyone = admin_client.get("/people/").content.decode()
    assert "annotator1" in everyone
    assert "outsider" in everyone

    partial = manager_client.get("/people/", {"q": "annot"}, headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<section id="people"')
    assert "annotator1" in partial
    assert "manager1" not in partial


def test_a_manager_sets_tier_and_domains_and_deactivates_and_reactivates_an_annotator(
    manager_client, project, annotator
):
    annotator.set_password("correct-horse-battery")
    annotator.save()
    response = manager_client.post(f"/people/{annotator.pk}/profile", {"tier": "expert", "domains": "chemistry"})
    assert response.status_code == 302
    profile = AnnotatorProfile.objects.get(user=annotator)
    assert (profile.tier, profile.domains) == ("expert", ["chemistry"])

    assert manager_client.post(f"/people/{annotator.pk}/active", {"active": "0"}).status_code == 302
    annotator.refresh_from_db()
    profile.refresh_from_db()
    assert not annotator.is_active
    assert not profile.active
    assert not Client().login(username="annotator1", password="correct-horse-battery")
    page = manager_client.get(f"/people/{annotator.pk}/").content.decode()
    assert "deactivated" in page
    assert 'id="reactivate"' in page

    manager_client.post(f"/people/{annotator.pk}/active", {"active": "1"})
    annotator.refresh_from_db()
    assert annotator.is_active
    assert AnnotatorProfile.objects.get(user=annotator).active
    assert Client().login(username="annotator1", password="correct-horse-battery")


def test_a_bad_tier_is_shown_next_to_the_field(manager_client, annotator):
    response = manager_client.post(f"/people/{annotator.pk}/profile", {"tier": "wizard", "domains": ""})
    assert response.status_code == 400
    assert "is not one of normal, expert" in field_error(response.content.decode(), "tier")


def test_a_manager_may_not_change_the_account_of_someone_who_also_works_elsewhere(
    manager_client, admin_client, project, annotator
):
    MembershipFactory(project=ProjectFactory(slug="elsewhere"), user=annotator, role=Membership.ANNOTATOR)
    page = manager_client.get(f"/people/{annotator.pk}/").content.decode()
    assert "They also work in projects you do not manage" in page
    assert "And 1 project you do not manage" in page
    assert manager_client.post(f"/people/{annotator.pk}/active", {"active": "0"}).status_code == 403
    assert manager_client.post(f"/people/{annotator.pk}/profile", {"tier": "expert"}).status_code == 403
    annotator.refresh_from_db()
    assert annotator.is_active
    # An admin may.
    assert admin_client.post(f"/people/{annotator.pk}/active", {"active": "0"}).status_code == 302
    annotator.refresh_from_db()
    assert not annotator.is_active


def test_no_one_deactivates_themselves_and_managers_leave_admins_and_other_managers_alone(
    manager_client, admin_client, admin, project, manager
):
    co_manager = UserFactory(username="co-manager")
    MembershipFactory(project=project, user=co_manager, role=Membership.MANAGER)
    assert manager_client.post(f"/people/{manager.pk}/active", {"active": "0"}).status_code == 403
    assert manager_client.post(f"/people/{co_manager.pk}/active", {"active": "0"}).status_code == 403
    assert admin_client.post(f"/people/{admin.pk}/active", {"active": "0"}).status_code == 403
    MembershipFactory(project=project, user=admin, role=Membership.ANNOTATOR)
    assert manager_client.post(f"/people/{admin.pk}/active", {"active": "0"}).status_code == 403
    assert User.objects.filter(is_active=False).count() == 0


def test_a_manager_adds_a_member_changes_role_and_quota_and_removes_them(manager_client, project):
    AnnotatorProfileFactory(user=UserFactory(username="bob"))
    bob = User.objects.get(username="bob")

    response = manager_client.post("/people/add", {"username": "bob", "project": project.slug, "role": "annotator"})
    assert response.status_code == 302
    assert response.url == f"/people/{bob.pk}/"
    assert Membership.objects.get(user=bob).quota is None

    manager_client.post(f"/people/{bob.pk}/memberships", {"project": project.slug, "role": "manager", "quota": "12"})
    membership = Membership.objects.get(user=bob)
    assert (membership.role, membership.quota) == ("manager", 12)

    bad = manager_client.post(f"/people/{bob.pk}/memberships", {"project": project.slug, "role": "boss"})
    assert bad.status_code == 400
    assert "is not one of manager, annotator" in bad.content.decode()

    assert manager_client.post(f"/people/{bob.pk}/memberships/remove", {"project": project.slug}).status_code == 302
    assert not Membership.objects.filter(user=bob).exists()

    unknown = manager_client.post("/people/add", {"username": "nobody", "project": project.slug, "role": "annotator"})
    assert unknown.status_code == 400
    assert "no account &#x27;nobody&#x27;" in field_error(unknown.content.decode(), "add-username")


def test_the_last_manager_of_a_project_stays(manager_client, project, manager):
    response = manager_client.post(f"/people/{manager.pk}/memberships/remove", {"project": project.slug})
    assert response.status_code == 400
    assert "would have no manager left" in response.content.decode()
    demote = manager_client.post(f"/people/{manager.pk}/memberships", {"project": project.slug, "role": "annotator"})
    assert demote.status_code == 400
    assert Membership.objects.get(user=manager).role == Membership.MANAGER


def test_a_manager_changes_memberships_only_in_projects_they_manage(manager_client, project, annotator):
    other: Project = ProjectFactory(slug="theirs")
    response = manager_client.post(f"/people/{annotator.pk}/memberships", {"project": other.slug, "role": "annotator"})
    assert response.status_code == 403
    assert not Membership.objects.filter(project=other).exists()

"""CSRF: every state change of the pages needs the token; the API needs none, because no cookie authenticates it.

- Every URL of the pages (from the resolver, as in test_security_urls.py), POSTed by a logged-in manager
  of the project (the admin for admin URLs; anonymous for login and logout) without a CSRF token, is
  refused with Django's 403 before its view runs, and nothing is written. With the token (form field or
  htmx's X-CSRFToken header) the same POST goes through, so the 403 is the CSRF check's.
- No GET of any page changes the database (but for the annotation queue's claim of the next item, a lease).
- The API: a session cookie never authenticates it (401), so a forged cross-site request carries no
  credentials; with its bearer token a POST needs no CSRF token.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.test import Client

from tests.test_security_support import (
    SiteURL,
    World,
    build_world,
    fill,
    security_settings,  # noqa: F401 (a fixture)
    site_urls,
)
from tests.test_security_urls import ADMIN_URLS, PUBLIC_URLS, _api_example

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("security_settings")]

URLS = site_urls()
PAGE_URLS = [url for url in URLS if not url.is_api]
API_POSTS = [url for url in URLS if url.is_api and _api_example(url) is not None]
# Rows a GET may legitimately write: the queue's claim of the next item (a lease, the claimer's annotator
# profile on a first claim) and its gold test.
GET_MAY_WRITE = {"webapp.Assignment", "webapp.AnnotatorProfile", "webapp.QualificationAttempt"}


def fingerprint() -> dict[str, tuple[int, str]]:
    """Per model: the row count and the latest updated_at, where it has one."""
    out = {}
    for model in apps.get_models():
        label = model._meta.label
        if label in GET_MAY_WRITE or model._meta.app_label in ("sessions", "admin"):
            continue
        rows = model._default_manager.all()
        latest = ""
        if any(f.name == "updated_at" for f in model._meta.get_fields()):
            latest = str(rows.order_by("-updated_at").values_list("updated_at", flat=True).first())
        out[label] = (rows.count(), latest)
    return out


def actor_for(url: SiteURL, world: World) -> Any:
    if url.name in PUBLIC_URLS:
        return None
    if url.name in ADMIN_URLS:
        return world.admin
    if url.name in ("annotate-submit", "annotate-skip", "annotation-edit"):
        return world.p1.annotator
    return world.p1.manager


def csrf_client(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize("url", PAGE_URLS, ids=[url.name for url in PAGE_URLS])
def test_a_post_without_the_csrf_token_is_refused_before_the_view(url: SiteURL, tmp_path: Path) -> None:
    world = build_world(tmp_path)
    path = fill(url, world.p1)
    client = csrf_client(actor_for(url, world))
    before = fingerprint()
    response = client.post(path, {"name": "forged", "project": world.p1.project.slug, "active": "0"})
    assert response.status_code == 403, f"POST {path} ({url.name}) without a token: {response.status_code}"
    assert b"CSRF" in response.content
    assert fingerprint() == before
    # A cross-site htmx request: the header, with a token that is not this session's.
    forged = client.post(path, {}, headers={"X-CSRFToken": "x" * 64, "HX-Request": "true"})
    assert forged.status_code == 403


def _token(client: Client, page: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(page).content.decode())
    assert found is not None, f"{page} has no CSRF token field"
    return found.group(1)


def test_with_the_token_the_same_posts_go_through(tmp_path: Path) -> None:
    """The 403s above are the CSRF check's: the token (in the form, or htmx's header) lets the request in."""
    world = build_world(tmp_path)
    slug = world.p1.project.slug
    client = csrf_client(world.p1.manager)
    token = _token(client, f"/p/{slug}/judging/")
    bad_judge = {"csrfmiddlewaretoken": token, "name": "", "backend": "openai"}
    assert client.post(f"/p/{slug}/judging/judges", bad_judge).status_code == 400  # the view's own answer
    header = client.post(f"/p/{slug}/routing/route", {"strategy": "nope"}, headers={"X-CSRFToken": token})
    assert header.status_code == 400
    anonymous = Client(enforce_csrf_checks=True)
    login_token = _token(anonymous, "/login/")
    form = {
        "csrfmiddlewaretoken": login_token,
        "username": world.p1.manager.username,
        "password": "correct-horse-battery",
    }
    assert anonymous.post("/login/", form).status_code == 302


def test_the_pages_put_the_token_where_htmx_sends_it(tmp_path: Path) -> None:
    world = build_world(tmp_path)
    client = csrf_client(world.p1.manager)
    page = client.get(f"/p/{world.p1.project.slug}/").content.decode()
    assert re.search(r"""hx-headers='\{"X-CSRFToken": "[A-Za-z0-9]{32,}"\}'""", page)
    cookie = client.cookies["csrftoken"]
    assert cookie["samesite"] == "Lax"


def test_no_get_of_any_page_writes_to_the_database(tmp_path: Path) -> None:
    world = build_world(tmp_path)
    for user in (world.p1.manager, world.p1.annotator, world.admin):
        client = Client()
        client.force_login(user)
        before = fingerprint()
        for url in URLS:
            if url.name in ("logout",) or "download" in url.name:
                continue
            client.get(fill(url, world.p1), headers={"Authorization": f"Bearer {world.tokens['admin']}"})
        after = fingerprint()
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k] and k != "webapp.ApiToken"}
        assert not changed, f"GETs as {user.username} changed {changed}"


@pytest.mark.parametrize("url", API_POSTS, ids=[url.name for url in API_POSTS])
def test_the_api_ignores_session_cookies_so_csrf_does_not_apply(url: SiteURL, tmp_path: Path) -> None:
    world = build_world(tmp_path)
    path = fill(url, world.p1)
    session = csrf_client(world.admin)  # a browser with the admin's session, as a forged request would carry
    refused = session.post(path, _api_example(url), content_type="application/json")
    assert refused.status_code == 401, f"POST {path} with only a session cookie: {refused.status_code}"
    token = Client(enforce_csrf_checks=True)  # no cookie, no CSRF token: the bearer token is the credential
    headers = {"Authorization": f"Bearer {world.tokens['admin']}"}
    accepted = token.post(path, _api_example(url), content_type="application/json", headers=headers)
    assert accepted.status_code not in (401, 403), f"POST {path} with the token: {accepted.status_code}"

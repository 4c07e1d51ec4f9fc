"""The permission matrix: every URL of the site (taken from the resolver when the tests are collected, the
ninja API's included, admin/ and static files left out) x GET and POST x six actors, on two rich projects.

For each URL, its parameters name P1's objects (tests/test_security_support.py: PARAMS). Then:
- anonymous: the pages redirect to the login page, the API answers 401;
- P2's annotator and manager: 403 or 404 (405 for a method the URL does not take) for anything of P1,
  and no response to them, whatever its status, holds P1's item ids, external ids, prompts or other texts;
- P1's annotator: refused on every manager URL (only ANNOTATOR_URLS let them in);
- P1's manager and the site admin: never refused (but OWNER_URLS are the annotator's own work, and
  ADMIN_URLS are the site admin's).
A URL added later is covered without change here; if one of its parameters is new, the test says which
one to add to PARAMS. A URL for annotators, or for admins only, is added to the sets below.
The API authenticates by bearer token only (never cookies), so CSRF does not apply to it
(tests/test_security_csrf.py).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.test_security_support import SiteURL as Url
from tests.test_security_support import (
    World,
    build_world,
    fill,
    security_settings,  # noqa: F401 (a fixture)
    site_urls,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("security_settings")]

ACTORS = ("anonymous", "p2_annotator", "p2_manager", "p1_annotator", "p1_manager", "admin")
OUTSIDERS = ("p2_annotator", "p2_manager")
# Open to everyone, logged in or not.
PUBLIC_URLS = {"login", "logout", "healthz", "api:openapi-json", "api:api-root"}
# Where a project's annotator is let in (every other URL naming a project's object is for its managers).
ANNOTATOR_URLS = {"project", "annotate", "annotate-submit", "annotate-skip", "annotation-edit", "api:get_project"}
# The annotator's own assignment or annotation: its managers and the admin get 403/404 there too.
OWNER_URLS = {"annotate-submit", "annotate-skip", "annotation-edit"}
# For site admins only (a project's manager is refused).
ADMIN_URLS = {"project-new", "project-new-preview", "api:create_project"}

REFUSED = {403, 404}
NOT_ALLOWED = 405  # the URL does not take this method: a refusal too, for any actor


def _post_data(url: Url, world: World) -> dict[str, Any]:
    """A form for the UI's POST URLs whose form names a project: P1's, so that P2's people are refused on it."""
    slug = world.p1.project.slug
    forms = {
        "person-new": {"username": "newcomer", "project": slug, "role": "annotator"},
        "person-add": {"username": world.p2.annotator.username, "project": slug, "role": "annotator"},
        "person-membership": {"project": slug, "role": "annotator"},
        "person-membership-remove": {"project": slug},
    }
    return forms.get(url.name, {})


# UI URLs without a project's object in their path that still act on P1 through their form (see _post_data).
FORM_NAMES_P1 = {"person-new", "person-add"}


@cache
def _openapi() -> dict[str, Any]:
    from webapp.api import api

    return api.get_openapi_schema()


def _api_example(url: Url) -> Any:
    """The POST body of the OpenAPI example of the URL's operation; None where it has none."""
    path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", url.route)
    operation = _openapi()["paths"].get(path, {}).get("post", {})
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    return content.get("example")


def _body(response: Any) -> bytes:
    if getattr(response, "streaming", False):
        # Read to the end, the test client then closes the response (a second close would also close the
        # test's database connection, as a WSGI server's end of request does).
        return b"".join(response.streaming_content)
    return bytes(response.content)


class Caller:
    """One actor's requests: a logged-in test client for the pages, its bearer token for the API."""

    def __init__(self, world: World, actor: str):
        self.actor = actor
        self.user = world.actors[actor]
        self.token = world.tokens.get(actor)
        self.client = Client()
        if self.user is not None:
            self.client.force_login(self.user)

    def send(self, url: Url, method: str, path: str, world: World) -> tuple[Any, bytes]:
        if url.is_api:
            client = Client()  # no session: the API must not care about one
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            if method == "get":
                response = client.get(path, headers=headers)
            else:
                example = _api_example(url)
                body = json.dumps(example if example is not None else {})
                response = client.post(path, body, content_type="application/json", headers=headers)
        elif method == "get":
            response = self.client.get(path)
        else:
            response = self.client.post(path, _post_data(url, world))
        return response, _body(response)


def _refused(url: Url, status: int, has_example: bool) -> bool:
    """403/404, or 405 for a method the URL does not take (the API: 422 for a body it never got to check)."""
    return status in REFUSED or status == NOT_ALLOWED or (url.is_api and not has_example and status == 422)


def _login_redirect(response: Any) -> bool:
    return response.status_code == 302 and str(response.get("Location", "")).startswith("/login/")


def check(url: Url, world: World) -> tuple[list[str], int]:
    """Every actor x method on the URL filled with P1's objects: the problems found, and the requests made."""
    path = fill(url, world.p1)
    secrets = [s for s in world.p1.secrets() if s]
    names = set(url.names)
    problems: list[str] = []
    accepted: dict[str, list[int]] = {}
    requests = 0
    for actor in ACTORS:
        caller = Caller(world, actor)
        for method in ("get", "post"):
            response, body = caller.send(url, method, path, world)
            requests += 1
            status = response.status_code
            has_example = method == "get" or _api_example(url) is not None
            where = f"{method.upper()} {path} ({url.name}) as {actor}: {status}"
            if status >= 500:
                problems.append(f"{where}: a server error")
                continue
            if actor in OUTSIDERS or actor == "anonymous":
                leaked = [s for s in secrets if s.encode() in body]
                if leaked:
                    problems.append(f"{where}: the response holds P1's {leaked[:3]}")
            if names & PUBLIC_URLS:
                continue
            acts_on_p1 = bool(url.params) or (method == "post" and names & FORM_NAMES_P1)
            if actor == "anonymous":
                ok = status in (401, NOT_ALLOWED) if url.is_api else _login_redirect(response)
                if not ok:
                    problems.append(f"{where}: expected {'401' if url.is_api else 'a redirect to /login/'}")
            elif actor in OUTSIDERS:
                if acts_on_p1 and not _refused(url, status, has_example):
                    problems.append(f"{where}: expected 403/404 for another project's member")
            elif actor == "p1_annotator":
                if acts_on_p1 and not names & ANNOTATOR_URLS and not _refused(url, status, has_example):
                    problems.append(
                        f"{where}: expected 403/404 (a manager's URL; if annotators belong, add it to ANNOTATOR_URLS)"
                    )
                if names & ANNOTATOR_URLS:
                    accepted.setdefault(actor, []).append(status)
            else:  # p1_manager, admin
                if names & OWNER_URLS or (actor == "p1_manager" and names & ADMIN_URLS):
                    continue
                if status in (401, 403, 404) or _login_redirect(response):
                    problems.append(f"{where}: refused (if only admins belong, add it to ADMIN_URLS)")
                accepted.setdefault(actor, []).append(status)
    for actor, statuses in accepted.items():
        if statuses and all(s == NOT_ALLOWED for s in statuses):
            problems.append(f"{path} ({url.name}): {actor} got 405 for both GET and POST")
    return problems, requests


URLS = site_urls()


def test_the_site_map_holds_the_pages_and_the_api():
    names = {name for url in URLS for name in url.names}
    assert {"home", "project", "item", "annotate", "judging", "exports", "routing"} <= names
    assert {"api:get_project", "api:get_item", "api:download_export_file", "api:score_candidate"} <= names
    assert not any(url.route.startswith("admin/") for url in URLS)


@pytest.mark.parametrize("url", URLS, ids=[url.name for url in URLS])
def test_every_actor_gets_only_what_their_role_allows(url: Url, tmp_path: Path) -> None:
    world = build_world(tmp_path)
    problems, requests = check(url, world)
    assert requests == len(ACTORS) * 2
    assert not problems, "\n".join(problems)


def test_p2s_own_pages_show_nothing_of_p1(tmp_path: Path) -> None:
    """Every page and API read filled with P2's objects, as P2's manager and annotator: none holds P1's data."""
    world = build_world(tmp_path)
    secrets = [s for s in world.p1.secrets() if s]
    problems = []
    seen_ok = 0
    for actor in OUTSIDERS:
        caller = Caller(world, actor)
        for url in URLS:
            if url.names[0] in PUBLIC_URLS:
                continue
            path = fill(url, world.p2)
            response, body = caller.send(url, "get", path, world)
            seen_ok += response.status_code == 200
            leaked = [s for s in secrets if s.encode() in body]
            if leaked:
                problems.append(f"GET {path} ({url.name}) as {actor}: {response.status_code} holds P1's {leaked[:3]}")
            if response.status_code >= 500:
                problems.append(f"GET {path} ({url.name}) as {actor}: a server error")
    assert seen_ok >= 10  # the manager's own pages did open
    assert not problems, "\n".join(problems)

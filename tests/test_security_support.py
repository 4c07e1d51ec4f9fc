"""Shared by the tests/test_security_*.py files (no tests here): two rich projects, every URL of the site
taken from the resolver at test time with its parameters filled with real objects, and an HTML checker
for executable markup.

- build_world(): project P1 with items (responses, one a conversation, metadata), an annotator's leased
  assignment and a submitted one with its annotation, an OpenAI-compatible judge with a run and
  judgments, an export snapshot on disk, a routing run, a routing candidate and a staged upload; P2 with
  the same; a manager and an annotator in each, and a site admin. Texts come from `text(field, project)`,
  so the XSS tests can fill every field with payloads.
- site_urls(): every URL pattern outside admin/ (the ninja API's included), as (route, names, pattern).
- fill(): a route with its parameters taken from PARAMS. A parameter this file does not know fails the
  calling test with a message naming the URL: whoever adds such a URL adds an entry to PARAMS.
- executable_markup(): what in an HTML page could run script or load remote content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.api import create_token
from webapp.models import (
    AnnotatorProfile,
    Assignment,
    HumanAnnotation,
    Judge,
    JudgeRun,
    Judgment,
    Membership,
    Project,
    RoutingCandidate,
    RoutingRun,
)
from webapp.services.exports import create_snapshot, run_snapshot

# Item ids of each project start here: ten digits that no page shows by chance, so that a leak is
# found by a plain search of a response (P1's ids are 1_900_000_00x, P2's 1_900_100_00x).
ITEM_ID_BASE = {"p1": 1_900_000_000, "p2": 1_900_100_000}
N_ITEMS = 4
LABEL = "A-is-clearly-better"

Text = Callable[[str, str], str]
# Texts of site-wide objects, which every manager may see: judges are configured for the whole site.
SITE_WIDE = {"judge", "model_name"}


def plain_text(field_name: str, key: str) -> str:
    """Distinctive text per field and project: "P1-prompt-secret" ... found by a search of a response."""
    return f"{key.upper()}-{field_name}-secret"


@dataclass
class ProjectWorld:
    key: str
    project: Project
    manager: Any
    annotator: Any
    items: list[Any]
    assignment: Assignment  # the annotator's leased one (submit, skip)
    annotation: HumanAnnotation  # the annotator's own, from a submitted assignment (edit)
    membership: Membership  # the annotator's
    judge: Judge
    judge_run: JudgeRun
    routing_run: RoutingRun
    candidate: RoutingCandidate
    snapshot: Any
    upload_token: str
    texts: dict[str, str] = field(default_factory=dict)

    @property
    def export_file(self) -> str:
        return str(self.snapshot.files[0]["name"])

    def secrets(self) -> list[str]:
        """What no response to anyone outside the project may contain."""
        item_texts = [t for i in self.items for t in (i.external_id, i.prompt, str(i.pk))]
        texts = [v for k, v in self.texts.items() if k not in SITE_WIDE]
        return [*item_texts, *texts, self.project.name, self.project.slug]


@dataclass
class World:
    p1: ProjectWorld
    p2: ProjectWorld
    admin: Any
    actors: dict[str, Any]
    tokens: dict[str, str]


def _project(key: str, text: Text, admin: Any) -> ProjectWorld:
    t = {f: text(f, key) for f in ("name", "guidelines", "justification", "response", "metadata", "turn", "judge")}
    t |= {f: text(f, key) for f in ("skip_reason", "rationale", "error", "external_annotator", "model_name")}
    project: Any = ProjectFactory(
        slug=f"sec-{key}", name=t["name"][:200], guidelines=t["guidelines"], aspects=["overall"], overlap_normal=2
    )
    manager: Any = UserFactory(username=f"{key}-manager")
    annotator: Any = UserFactory(username=text("username", key)[:150])
    MembershipFactory(project=project, user=manager, role=Membership.MANAGER)
    membership = MembershipFactory(project=project, user=annotator, role=Membership.ANNOTATOR)
    AnnotatorProfile.objects.create(user=annotator)
    items = []
    for k in range(N_ITEMS):
        extra: dict[str, Any] = {}
        if k == N_ITEMS - 1:  # a multi-turn item
            turns = [("user", "turn one"), ("assistant", "turn two"), ("user", "turn three")]
            extra["conversation"] = [{"role": r, "content": f"{t['turn']} {c}"} for r, c in turns]
        items.append(
            ItemFactory(
                id=ITEM_ID_BASE[key] + k,
                project=project,
                external_id=text(f"external_id-{k}", key)[:255],
                prompt=text(f"prompt-{k}", key),
                metadata={"source": t["metadata"], "nested": {"note": t["metadata"]}, t["metadata"][:40]: 1},
                responses=[f"{t['response']} A{k}", f"{t['response']} B{k}"],
                **extra,
            )
        )
    lease = timezone.now() + timedelta(hours=1)
    assignment = Assignment.objects.create(
        item=items[0], annotator=annotator, display_order=[1, 0], lease_expires_at=lease
    )
    done = Assignment.objects.create(
        item=items[1], annotator=annotator, display_order=[0, 1], lease_expires_at=lease, status=Assignment.SUBMITTED
    )
    annotation = HumanAnnotation.objects.create(
        item=items[1],
        annotator=annotator,
        assignment=done,
        preferences={"overall": LABEL},
        justification=t["justification"],
    )
    Assignment.objects.create(
        item=items[2],
        annotator=annotator,
        display_order=[0, 1],
        lease_expires_at=lease,
        status=Assignment.SKIPPED,
        skip_reason=t["skip_reason"],
    )
    for k in (0, 2):  # imported labels, so that the export has rows
        HumanAnnotation.objects.create(
            item=items[k], external_annotator=t["external_annotator"][:255], preferences={"overall": LABEL}
        )
    judge = Judge.objects.create(
        name=t["judge"][:200],
        backend=Judge.OPENAI,
        model=t["model_name"][:500],
        config={"base_url": "http://127.0.0.1:9/v1"},
    )
    judge_run = JudgeRun.objects.create(
        project=project, judge=judge, created_by=manager, prompt_version="v1", status=JudgeRun.DONE, items_total=2
    )
    Judgment.objects.create(
        item=items[0], judge=judge, run=judge_run, order="0-1", prompt_version="v1", status="failed", error=t["error"]
    )
    Judgment.objects.create(
        item=items[1],
        judge=judge,
        run=judge_run,
        order="combined",
        prompt_version="v1",
        status="done",
        labels={"overall": LABEL},
        rationale=t["rationale"],
    )
    routing_run = RoutingRun.objects.create(
        project=project, strategy="random", budget=0.5, budget_n=2, status="done", created_by=manager
    )
    candidate = RoutingCandidate.objects.create(project=project, budget=0.5, strategy="random")
    snapshot = run_snapshot(create_snapshot(project, format="trl-preference").pk)
    assert snapshot.status == "done", f"the {key} export failed: {snapshot.error}"
    assert snapshot.files
    upload_token = _stage_upload(project, manager, text("upload_name", key))
    return ProjectWorld(
        key=key,
        project=project,
        manager=manager,
        annotator=annotator,
        items=items,
        assignment=assignment,
        annotation=annotation,
        membership=membership,
        judge=judge,
        judge_run=judge_run,
        routing_run=routing_run,
        candidate=candidate,
        snapshot=snapshot,
        upload_token=upload_token,
        texts=t,
    )


def _stage_upload(project: Project, user: Any, name: str) -> str:
    from webapp.services import uploads

    row = {"id": "staged-1", "prompt": "A staged prompt?", "responses": [{"text": "a"}, {"text": "b"}]}
    safe_name = re.sub(r"[/\\\x00]", "_", name)[:150] + ".jsonl"
    staged = uploads.stage_upload(project, user, SimpleUploadedFile(safe_name, json.dumps(row).encode()), "native")
    return staged.token


def build_world(tmp_path: Path, text: Text = plain_text) -> World:
    """Both projects, their people and an admin (settings.EXPORT_DIR and UPLOAD_DIR must point under tmp_path)."""
    assert str(settings.EXPORT_DIR).startswith(str(tmp_path))
    assert str(settings.UPLOAD_DIR).startswith(str(tmp_path))
    admin: Any = UserFactory(username="site-admin", is_superuser=True, is_staff=True)
    p1 = _project("p1", text, admin)
    p2 = _project("p2", text, admin)
    actors = {
        "anonymous": None,
        "p2_annotator": p2.annotator,
        "p2_manager": p2.manager,
        "p1_annotator": p1.annotator,
        "p1_manager": p1.manager,
        "admin": admin,
    }
    tokens = {name: create_token(user, name) for name, user in actors.items() if user is not None}
    return World(p1=p1, p2=p2, admin=admin, actors=actors, tokens=tokens)


@pytest.fixture
def security_settings(settings: Any, tmp_path: Path) -> Any:
    """Exports and uploads under tmp_path, cheap password hashing."""
    settings.EXPORT_DIR = tmp_path / "exports"
    settings.UPLOAD_DIR = tmp_path / "uploads"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


# --- the site's URLs -----------------------------------------------------------------------------------

SKIPPED_PREFIXES = ("admin/", "static/")  # Django's admin site (its own permission system); static files


@dataclass
class SiteURL:
    route: str  # e.g. "p/<slug:slug>/items/<int:item_id>/"
    names: list[str]  # URL names (the API's namespaced: "api:get_item"); several for one API path
    pattern: URLPattern

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/")

    @property
    def params(self) -> list[str]:
        return re.findall(r"<(?:\w+:)?(\w+)>", self.route)


def _walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            ns = f"{namespace}:{entry.namespace}" if namespace and entry.namespace else (entry.namespace or namespace)
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), ns)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}:{entry.name}" if namespace and entry.name else (entry.name or "")
            yield prefix + str(entry.pattern), name, entry


def site_urls() -> list[SiteURL]:
    """Every URL pattern of the site (one entry per route), admin/ and static files left out."""
    by_route: dict[str, SiteURL] = {}
    for route, name, pattern in _walk(get_resolver().url_patterns):
        if route.startswith(SKIPPED_PREFIXES):
            continue
        if route.startswith("^") or "(?P<" in route:
            pytest.fail(f"URL {route!r} ({name}) is a regex pattern: tests/test_security_support.py fills only path()")
        if route in by_route:
            by_route[route].names.append(name or route)
        else:
            by_route[route] = SiteURL(route, [name or route], pattern)
    return list(by_route.values())


def _run_id(w: ProjectWorld, url: SiteURL) -> int:
    return w.routing_run.pk if "routing" in url.route else w.judge_run.pk


# A real object of the project for each URL parameter name. A new URL with another parameter: add it here.
PARAMS: dict[str, Callable[[ProjectWorld, SiteURL], Any]] = {
    "slug": lambda w, u: w.project.slug,
    "item_id": lambda w, u: w.items[0].pk,
    "assignment_id": lambda w, u: w.assignment.pk,
    "annotation_id": lambda w, u: w.annotation.pk,
    "run_id": _run_id,
    "version": lambda w, u: w.snapshot.version,
    "name": lambda w, u: w.export_file,
    "candidate_id": lambda w, u: w.candidate.pk,
    "token": lambda w, u: w.upload_token,
    "user_id": lambda w, u: w.annotator.pk,  # the project's annotator, a member of no other project
    "membership_id": lambda w, u: w.membership.pk,
}


def fill(url: SiteURL, w: ProjectWorld) -> str:
    """The URL's path with each parameter replaced by the project's object (see PARAMS)."""
    unknown = [p for p in url.params if p not in PARAMS]
    if unknown:
        pytest.fail(
            f"URL /{url.route} ({url.name}) has parameter(s) {unknown} that tests/test_security_support.py does not"
            " know: add each to PARAMS with a real object of the project (and to ProjectWorld if it needs a new one),"
            " so that the permission matrix covers the new URL."
        )
    path = url.route
    for match in re.finditer(r"<(?:\w+:)?(\w+)>", url.route):
        path = path.replace(match.group(0), str(PARAMS[match.group(1)](w, url)), 1)
    return "/" + path


def has_project_object(url: SiteURL) -> bool:
    """Whether the URL names one of a project's objects (a project, an item, a person of the project...)."""
    return bool(url.params)


# --- executable markup ---------------------------------------------------------------------------------

URL_ATTRS = {
    "href", "src", "action", "formaction", "xlink:href", "data", "poster", "background", "srcset", "lowsrc",
    "dynsrc", "ping", "cite", "longdesc", "manifest", "codebase", "to", "from", "values", "by",
    "hx-get", "hx-post", "hx-put", "hx-patch", "hx-delete",
}  # fmt: skip
LOADING_ATTRS = {"src", "srcset", "data", "poster", "background", "lowsrc", "dynsrc", "codebase", "xlink:href"}
FORBIDDEN_TAGS = {"iframe", "frame", "frameset", "object", "embed", "applet", "base", "portal"}
SCRIPT_SCHEMES = ("javascript:", "vbscript:", "livescript:", "data:text/html", "data:image/svg", "data:application")
REMOTE = ("http:", "https:", "//", "ftp:")


def _squeeze(value: str) -> str:
    """An attribute value as a browser reads a URL: without spaces and control characters, lower-case."""
    return re.sub(r"[\x00-\x20\x7f]+", "", value).lower()


TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "webapp" / "templates"
_HANDLER_ATTR = re.compile(r"""\s((?:data-)?(?:on[a-z]+|hx-on[\w:.-]*))\s*=\s*("([^"]*)"|'([^']*)')""", re.IGNORECASE)


def template_handlers() -> dict[str, list[str]]:
    """The inline event handlers the templates themselves hold: {handler code: [template:line, ...]}."""
    found: dict[str, list[str]] = {}
    for path in sorted(TEMPLATES_DIR.rglob("*.html")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in _HANDLER_ATTR.finditer(line):
                code = match.group(3) if match.group(3) is not None else match.group(4)
                found.setdefault(code, []).append(f"{path.relative_to(TEMPLATES_DIR)}:{number}")
    return found


class _Finder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_script = False
        self._site_handlers = set(template_handlers())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        where = f"<{tag} {' '.join(f'{k}={v!r}' for k, v in values.items())}>"[:200]
        if tag == "script":
            src = values.get("src", "")
            if not src.startswith(settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/static/"):
                self.problems.append(f"a script that is not one of the site's static files: {where}")
            self._in_script = True
        if tag in FORBIDDEN_TAGS:
            self.problems.append(f"a <{tag}> element: {where}")
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            self.problems.append(f"a meta refresh: {where}")
        for name, value in values.items():
            if name.startswith(("on", "hx-on", "data-hx-on")) and value not in self._site_handlers:
                self.problems.append(f"an event handler attribute {name!r}: {where}")
            squeezed = _squeeze(value)
            if name in URL_ATTRS and squeezed.startswith(SCRIPT_SCHEMES):
                self.problems.append(f"a script URL in {name!r}: {where}")
            if name in LOADING_ATTRS and squeezed.startswith(REMOTE):
                self.problems.append(f"remote content loaded by {name!r}: {where}")
            if name in ("hx-vals", "hx-headers", "hx-vars") and squeezed.startswith(("js:", "javascript:")):
                self.problems.append(f"htmx evaluating script in {name!r}: {where}")
            if name == "style" and ("expression(" in squeezed or re.search(r"url\((['\"]?)(https?:|//)", squeezed)):
                self.problems.append(f"a style that runs or fetches: {where}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "script":
            self._in_script = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append(f"inline script: {data.strip()[:120]!r}")


def executable_markup(html: str) -> list[str]:
    """What in the page could run script or load remote content (empty: nothing)."""
    finder = _Finder()
    finder.feed(html)
    finder.close()
    return finder.problems


def is_html(response: Any) -> bool:
    return str(response.get("Content-Type", "")).startswith("text/html") and not getattr(response, "streaming", False)

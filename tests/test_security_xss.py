"""XSS: payloads in every text that users or imports can set, on every page that may show them.

Every text field of both projects (name, guidelines, item ids, prompts, conversation turns, responses,
metadata keys and values, annotators' justifications, skip reasons, judge names and models, judgments'
rationales and errors, imported annotators, usernames, an uploaded file's name) holds every payload below.
Then every page of the site (every GET URL from the resolver, as a full page and as an htmx partial) is
rendered for P1's manager, its annotator and the site admin, every form on those pages is posted back with
the payloads in each of its fields (the error pages that echo input), and the pages are rendered again.
Each HTML answer is parsed (html.parser, not a substring search of escaped text): no script but the
site's own static files, no on* or hx-on attributes, no javascript:/data: URLs, no remote src, no
<iframe>/<object>/<embed>/<base>. tests/test_annotate_browser.py checks the annotation page in a real browser.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.test_security_support import (
    World,
    build_world,
    executable_markup,
    fill,
    is_html,
    security_settings,  # noqa: F401 (a fixture)
    site_urls,
)
from webapp.markdown import render_markdown

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("security_settings")]

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "[markdown link](javascript:alert(3))",
    '<a href="javascript:alert(4)">html link</a>',
    "<a href='&#106;avascript:alert(5)'>entity link</a>",
    "<svg onload=alert(6)><circle r=1 /></svg>",
    '<iframe src="http://evil.example/frame"></iframe>',
    '<img src="http://evil.example/pixel.png">',
    "![remote image](http://evil.example/md.png)",
    '"><script>alert(7)</script>',
    "' onmouseover='alert(8)' x='",
    '<div style="background:url(http://evil.example/bg.png)">styled</div>',
    '<object data="javascript:alert(9)"></object><embed src="http://evil.example/e.swf">',
    '<base href="http://evil.example/"><meta http-equiv="refresh" content="0;url=http://evil.example/">',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(10)>",
    "{{ 7|add:7 }}{% now 'Y' %}",
]
# First in every text, so that the fields with short columns (usernames, names, ids) still hold these.
SHORT = '"><script>alert(0)</script><img src=x onerror=alert(0)><svg onload=alert(0)>'
FULL = "\n\n".join(PAYLOADS)
# Fields that must show up (escaped) on at least one page: otherwise the sweep would prove nothing.
MUST_SHOW = {
    "name", "guidelines", "username", "external_id-0", "prompt-0", "turn", "response", "metadata",
    "justification", "judge", "model_name", "error", "upload_name", "external_annotator",
}  # fmt: skip


def xss_text(field_name: str, key: str) -> str:
    return f"{key.upper()}-{field_name}-MARK {SHORT} {FULL}"


# --- the sanitizer on its own ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [*PAYLOADS, SHORT])
def test_markdown_keeps_no_executable_markup(payload: str) -> None:
    html = render_markdown(f"Some text.\n\n{payload}\n\nMore *text*.")
    assert executable_markup(html) == []
    assert "evil.example" not in html or 'href="http://evil.example' in html  # a plain link may stay
    assert "<img" not in html
    assert "<iframe" not in html
    assert "<svg" not in html


# --- every page -------------------------------------------------------------------------------------------


class _Forms(HTMLParser):
    """The forms of a page: action, method and fields (name, type, value, options)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self._select: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(), "fields": []})
        elif self.forms and tag in ("input", "textarea", "select", "button") and a.get("name"):
            entry = {"name": a["name"], "type": a.get("type", tag).lower(), "value": a.get("value", ""), "tag": tag}
            self.forms[-1]["fields"].append(entry)
            if tag == "select":
                self._select = entry
                entry["options"] = []
        elif tag == "option" and self._select is not None:
            self._select["options"].append(a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def page_forms(html: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def payload_form(form: dict[str, Any]) -> dict[str, Any]:
    """The form's fields, each text holding the payloads; a file field gets a JSONL file named with them."""
    data: dict[str, Any] = {}
    for f in form["fields"]:
        name, kind = f["name"], f["type"]
        if name == "csrfmiddlewaretoken" or kind in ("submit", "button", "reset", "image"):
            continue
        if kind == "file":
            row = {"id": "x1", "prompt": SHORT, "responses": [{"text": "a"}, {"text": "b"}]}
            value: Any = SimpleUploadedFile(f"{SHORT[:60]}.jsonl", json.dumps(row).encode())
        elif kind in ("checkbox", "radio"):
            value = f["value"] or "on"
        elif kind == "hidden":
            value = f["value"]
        else:  # text, textarea, select (an invalid choice: its error echoes it), number, email...
            value = f"FORM-{name}-MARK {SHORT} {FULL}"
        data.setdefault(name, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in data.items()}


class Sweep:
    def __init__(self, world: World) -> None:
        self.world = world
        self.problems: list[str] = []
        self.pages = 0
        self.html_seen: list[str] = []
        self.forms: dict[tuple[str, str], dict[str, Any]] = {}  # (actor, action) -> form

    def check(self, label: str, response: Any) -> None:
        if response.status_code >= 500:
            self.problems.append(f"{label}: a server error ({response.status_code})")
            return
        if not is_html(response):
            return
        html = response.content.decode("utf-8", "replace")
        self.pages += 1
        self.html_seen.append(html)
        self.problems += [f"{label}: {p}" for p in executable_markup(html)]

    def client(self, actor: str) -> Client:
        client = Client()
        client.force_login(self.world.actors[actor])
        return client

    def pages_of(self, actor: str, collect_forms: bool) -> None:
        client = self.client(actor)
        p1 = self.world.p1
        paths = [fill(url, p1) for url in site_urls() if not url.is_api and url.name != "logout"]
        paths += [f"/p/{p1.project.slug}/items/{item.pk}/" for item in p1.items[1:]]  # the multi-turn one too
        for path in paths:
            for htmx in (False, True):
                headers = {"HX-Request": "true"} if htmx else {}
                response = client.get(path, headers=headers)
                self.check(f"GET {path}{' (htmx)' if htmx else ''} as {actor}", response)
                if collect_forms and not htmx and is_html(response):
                    for form in page_forms(response.content.decode()):
                        action = form["action"] or path
                        # Not the login form (a failed login counts against the address: test_security_login.py),
                        # nor logging out.
                        if form["method"] == "post" and urlsplit(action).path not in ("/logout/", "/login/"):
                            self.forms.setdefault((actor, urlsplit(action).path), form)

    def post_forms(self) -> None:
        for (actor, action), form in self.forms.items():
            client = self.client(actor)
            response = client.post(action, payload_form(form), follow=True)
            self.check(f"POST {action} (payloads in every field) as {actor}", response)


def test_no_page_runs_markup_that_users_or_imports_put_in(tmp_path: Path) -> None:
    world = build_world(tmp_path, text=xss_text)
    sweep = Sweep(world)
    for actor in ("p1_manager", "admin", "p1_annotator"):
        sweep.pages_of(actor, collect_forms=True)
    # The annotator's skip reason (stored on no page yet: the form echoes it on an error).
    skip = f"/p/{world.p1.project.slug}/annotate/{world.p1.assignment.pk}/skip"
    sweep.check("POST skip", sweep.client("p1_annotator").post(skip, {"skip_reason": xss_text("skip", "p1")}))
    sweep.post_forms()
    for actor in ("p1_manager", "admin", "p1_annotator"):  # again: the forms may have stored payloads
        sweep.pages_of(actor, collect_forms=False)

    assert not sweep.problems, f"{len(sweep.problems)} problem(s):\n" + "\n".join(sweep.problems[:40])
    assert sweep.pages > 100
    assert len(sweep.forms) >= 15, sorted(sweep.forms)
    everything = "\n".join(sweep.html_seen)
    missing = sorted(f for f in MUST_SHOW if f"P1-{f}-MARK" not in everything)
    assert not missing, f"never shown on any page, so not checked: {missing}"
    assert "FORM-" in everything  # some form echoed its input


def test_the_api_answers_json_never_html(tmp_path: Path) -> None:
    """The payloads come back from the API as JSON strings, under a JSON content type browsers do not sniff."""
    world = build_world(tmp_path, text=xss_text)
    headers = {"Authorization": f"Bearer {world.tokens['admin']}"}
    client = Client()
    answered = 0
    for url in site_urls():
        if not url.is_api or "download" in url.name:
            continue
        response = client.get(fill(url, world.p1), headers=headers)
        if response.status_code != 200:
            continue
        answered += 1
        assert response["Content-Type"].startswith("application/json"), url.name
        assert response["X-Content-Type-Options"] == "nosniff"
        json.loads(response.content)
    assert answered >= 8
    item = client.get(f"/api/projects/{world.p1.project.slug}/items/{world.p1.items[0].pk}", headers=headers).json()
    assert "<script>alert(0)</script>" in item["prompt"]  # data stays as it was given; pages escape it

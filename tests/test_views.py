"""The pages, through Django's test client: who sees what, htmx partials, and no script from imported text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.test import Client

from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.models import HumanAnnotation, Item, Judge, Judgment, Membership, Project

pytestmark = pytest.mark.django_db

XSS_PROMPT = (
    "Please summarise.\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
    '[x](javascript:alert(1))\n\n<iframe src="https://evil.example"></iframe>\n\n'
    '<a href="javascript:alert(2)" onclick="alert(3)">click</a>'
)


class Tags(HTMLParser):
    """Every start tag and its attributes, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


def assert_nothing_runs_or_loads(html: str) -> None:
    """Only our own static script; no inline script, no event handler, no javascript: URL, no frame, no image."""
    for tag, attrs in tags_of(html):
        assert tag not in {"iframe", "img", "object", "embed", "frame"}, (tag, attrs)
        if tag == "script":
            assert (attrs.get("src") or "").startswith("/static/"), attrs
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, attrs)
            assert not (value or "").strip().lower().startswith("javascript:"), (tag, attrs)
    assert "<script>alert" not in html


@pytest.fixture
def member(manager):
    """A member who browses the project: its manager (annotators work from the queue instead)."""
    return manager


@pytest.fixture
def member_client(member):
    client = Client()
    client.force_login(member)
    return client


@pytest.fixture
def annotator_client(annotator):
    client = Client()
    client.force_login(annotator)
    return client


@pytest.fixture
def other_project():
    return ProjectFactory(slug="secret-project", name="Secret project")


@pytest.fixture
def item(project):
    return ItemFactory(project=project, external_id="q-1", prompt="What is the capital of France?")


# --- login required -------------------------------------------------------------------------


def test_every_page_sends_anonymous_visitors_to_the_login_page(client, project, item):
    for url in ["/", f"/p/{project.slug}/", f"/p/{project.slug}/items/{item.pk}/", "/p/no-such-project/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith("/login/?next="), url


def test_the_login_page_itself_is_public(client):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_healthz_is_public_and_checks_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_logging_in_with_the_form_reaches_the_project_list(client, member, project):
    response = client.post("/login/", {"username": "manager1", "password": "correct-horse-battery"}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == "/"
    assert project.name in response.content.decode()


# --- who sees what --------------------------------------------------------------------------


def test_a_member_sees_only_their_projects_in_the_list(member_client, project, other_project):
    page = member_client.get("/").content.decode()
    assert f'href="/p/{project.slug}/"' in page
    assert other_project.slug not in page
    assert other_project.name not in page


def test_someone_in_no_project_is_told_how_to_join(client):
    client.force_login(UserFactory())
    response = client.get("/")
    assert response.status_code == 200
    assert "You are not a member of any project yet" in response.content.decode()


def test_the_project_list_counts_items(member_client, project):
    ItemFactory.create_batch(3, project=project)
    page = member_client.get("/").content.decode()
    assert re.search(r'<td class="num">3</td>', page)


def test_a_member_sees_the_project_page_with_items_and_role(member_client, project, item):
    response = member_client.get(f"/p/{project.slug}/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "<html" in page
    assert "your role: manager" in page
    assert f'href="/p/{project.slug}/items/{item.pk}/"' in page
    assert "What is the capital of France?" in page


def test_an_annotator_is_sent_from_the_project_page_to_the_annotation_queue(annotator_client, project):
    response = annotator_client.get(f"/p/{project.slug}/")
    assert response.status_code == 302
    assert response.url == f"/p/{project.slug}/annotate/"


def test_an_annotator_may_not_browse_items_and_other_peoples_labels(annotator_client, project, item):
    HumanAnnotation.objects.create(item=item, external_annotator="rater-9", justification="my private reasoning")
    response = annotator_client.get(f"/p/{project.slug}/items/{item.pk}/")
    assert response.status_code == 403
    assert b"my private reasoning" not in response.content


def test_an_annotator_sees_their_projects_in_the_list(annotator_client, project, other_project):
    page = annotator_client.get("/").content.decode()
    assert project.name in page
    assert other_project.name not in page


def test_a_non_member_gets_403_for_another_projects_page_and_items(member_client, other_project):
    secret = ItemFactory(project=other_project, prompt="top secret prompt")
    for url in [
        f"/p/{other_project.slug}/",
        f"/p/{other_project.slug}/items/{secret.pk}/",
        f"/p/{other_project.slug}/annotate/",
    ]:
        response = member_client.get(url)
        assert response.status_code == 403, url
        assert b"top secret prompt" not in response.content


def test_an_unknown_project_is_404(member_client):
    assert member_client.get("/p/does-not-exist/").status_code == 404


def test_an_item_of_another_project_is_404_even_under_a_project_the_user_belongs_to(
    member_client, project, other_project
):
    secret = ItemFactory(project=other_project, prompt="top secret prompt")
    response = member_client.get(f"/p/{project.slug}/items/{secret.pk}/")
    assert response.status_code == 404
    assert b"top secret prompt" not in response.content


def test_a_missing_item_is_404(member_client, project):
    assert member_client.get(f"/p/{project.slug}/items/999999/").status_code == 404


def test_a_superuser_sees_every_project_and_its_items(client, project, other_project):
    admin = UserFactory(username="root", is_superuser=True, is_staff=True)
    secret = ItemFactory(project=other_project, prompt="top secret prompt")
    client.force_login(admin)
    home = client.get("/").content.decode()
    assert project.name in home
    assert other_project.name in home
    page = client.get(f"/p/{other_project.slug}/")
    assert page.status_code == 200
    assert "your role: manager" in page.content.decode()
    assert client.get(f"/p/{other_project.slug}/items/{secret.pk}/").status_code == 200


def test_pages_only_answer_get(member_client, project):
    assert member_client.post("/").status_code == 405
    assert member_client.post(f"/p/{project.slug}/").status_code == 405


# --- search, filter, htmx -------------------------------------------------------------------


@pytest.fixture
def varied_items(project):
    return {
        "paris": ItemFactory(project=project, external_id="geo-1", prompt="Capital of France?", route=Item.HUMAN),
        "rome": ItemFactory(project=project, external_id="geo-2", prompt="Capital of Italy?", route=Item.AI),
        "math": ItemFactory(project=project, external_id="math-1", prompt="What is 2+2?", route=Item.HUMAN),
    }


def shown_ids(html: str) -> set[str]:
    return set(re.findall(r'<a href="/p/[^/]+/items/\d+/">([^<]+)</a>', html))


def test_the_project_page_searches_prompts_and_ids(member_client, project, varied_items):
    assert shown_ids(member_client.get(f"/p/{project.slug}/", {"q": "capital"}).content.decode()) == {
        "geo-1",
        "geo-2",
    }
    assert shown_ids(member_client.get(f"/p/{project.slug}/", {"q": "MATH"}).content.decode()) == {"math-1"}
    page = member_client.get(f"/p/{project.slug}/", {"q": "nothing like this"}).content.decode()
    assert shown_ids(page) == set()
    assert "No items match." in page


def test_the_project_page_filters_by_route(member_client, project, varied_items):
    assert shown_ids(member_client.get(f"/p/{project.slug}/", {"route": "human"}).content.decode()) == {
        "geo-1",
        "math-1",
    }
    assert shown_ids(member_client.get(f"/p/{project.slug}/", {"route": "ai", "q": "capital"}).content.decode()) == {
        "geo-2"
    }
    # An unknown route is ignored rather than an error.
    assert len(shown_ids(member_client.get(f"/p/{project.slug}/", {"route": "bogus"}).content.decode())) == 3


def test_the_search_box_keeps_what_was_typed_escaped(member_client, project):
    page = member_client.get(f"/p/{project.slug}/", {"q": '"><script>alert(1)</script>'}).content.decode()
    assert_nothing_runs_or_loads(page)
    assert "&quot;&gt;&lt;script&gt;" in page


def test_an_htmx_request_gets_only_the_items_partial(member_client, project, varied_items):
    response = member_client.get(f"/p/{project.slug}/", {"q": "capital"}, HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in page
    assert "<head" not in page
    assert '<form class="filters"' not in page
    assert page.strip().startswith('<section id="items">')
    assert page.strip().endswith("</section>")
    assert "<table" in page
    assert shown_ids(page) == {"geo-1", "geo-2"}
    assert "2 items" in page


def test_the_full_page_holds_the_same_items_partial(member_client, project, varied_items):
    page = member_client.get(f"/p/{project.slug}/").content.decode()
    assert "<html" in page
    assert page.count('<section id="items">') == 1
    assert 'hx-target="#items"' in page


def test_the_project_page_pages_through_many_items(member_client, project):
    Item.objects.bulk_create([Item(project=project, external_id=f"bulk-{n:03d}", prompt="p") for n in range(120)])
    first = member_client.get(f"/p/{project.slug}/").content.decode()
    assert len(shown_ids(first)) == 50
    assert "Page 1 of 3" in first
    last = member_client.get(f"/p/{project.slug}/", {"page": 3}, HTTP_HX_REQUEST="true").content.decode()
    assert len(shown_ids(last)) == 20
    assert "Page 3 of 3" in last


# --- item page ------------------------------------------------------------------------------


def test_the_item_page_shows_responses_human_annotations_and_judgments(member_client, project):
    item = ItemFactory(
        project=project,
        external_id="cmp-7",
        prompt="Explain **recursion**.",
        responses=["See recursion.", "A function calling itself."],
    )
    HumanAnnotation.objects.create(
        item=item,
        annotator=UserFactory(username="alice"),
        preferences={"overall": "B-is-clearly-better"},
        justification="B actually explains it.",
    )
    HumanAnnotation.objects.create(
        item=item, external_annotator="mturk-42", tier="expert", preferences={"overall": "Tie"}, imported=True
    )
    judge = Judge.objects.create(name="gpt-judge", backend=Judge.OPENAI, model="gpt-4o")
    Judgment.objects.create(
        item=item,
        judge=judge,
        order="1-0",
        prompt_version="v1",
        labels={"overall": "B-is-slightly-better"},
        status=Judgment.DONE,
        rationale="B defines the term.",
    )
    response = member_client.get(f"/p/{project.slug}/items/{item.pk}/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "Item cmp-7" in page
    assert "<strong>recursion</strong>" in page  # the prompt is rendered markdown
    assert "See recursion." in page
    assert "A function calling itself." in page
    assert "model-0" in page
    assert "model-1" in page
    assert "alice" in page
    assert "B-is-clearly-better" in page
    assert "B actually explains it." in page
    assert "mturk-42" in page
    assert "imported" in page
    assert "gpt-judge" in page
    assert "1-0" in page
    assert "B-is-slightly-better" in page
    assert "B defines the term." in page
    assert "None yet." not in page


def test_an_item_without_labels_says_so(member_client, project, item):
    page = member_client.get(f"/p/{project.slug}/items/{item.pk}/").content.decode()
    assert page.count("None yet.") == 2


def test_a_conversation_item_shows_every_turn(member_client, project):
    item = Item.objects.create(
        project=project,
        external_id="chat-1",
        conversation=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say *hi*."},
        ],
    )
    page = member_client.get(f"/p/{project.slug}/items/{item.pk}/").content.decode()
    assert "Be brief." in page
    assert "<em>hi</em>" in page
    assert 'class="turn user"' in page


# --- no script from imported text -----------------------------------------------------------


def test_script_in_a_prompt_or_response_never_reaches_the_item_page(member_client, project):
    item = ItemFactory(project=project, external_id="xss-1", prompt=XSS_PROMPT, responses=[XSS_PROMPT, "plain"])
    HumanAnnotation.objects.create(
        item=item, external_annotator='<img src=x onerror="alert(5)">', justification=XSS_PROMPT, imported=True
    )
    page = member_client.get(f"/p/{project.slug}/items/{item.pk}/").content.decode()
    assert_nothing_runs_or_loads(page)
    assert "Please summarise." in page  # the harmless text survives
    # The markdown link survives as text, without its javascript: target.
    assert re.search(r"<a[^>]*>x</a>", page)
    assert "evil.example" not in page.replace("&quot;https://evil.example&quot;", "")


def test_script_in_a_conversation_never_reaches_the_item_page(member_client, project):
    item = Item.objects.create(
        project=project,
        external_id="xss-2",
        conversation=[{"role": "user", "content": XSS_PROMPT}, {"role": '"><script>alert(4)</script>', "content": "x"}],
    )
    page = member_client.get(f"/p/{project.slug}/items/{item.pk}/").content.decode()
    assert_nothing_runs_or_loads(page)


def test_script_in_prompts_ids_and_metadata_is_escaped_on_the_project_page(member_client, project):
    ItemFactory(
        project=project, external_id="<script>alert(7)</script>", prompt=XSS_PROMPT, metadata={"<b>": "<img src=x>"}
    )
    page = member_client.get(f"/p/{project.slug}/").content.decode()
    assert_nothing_runs_or_loads(page)
    assert "&lt;script&gt;alert(7)&lt;/script&gt;" in page


def test_script_in_project_guidelines_is_sanitised(client, project):
    Project.objects.filter(pk=project.pk).update(
        guidelines="# Rules\n\n" + XSS_PROMPT, name="<script>alert(9)</script>"
    )
    user = UserFactory()
    MembershipFactory(project=project, user=user, role=Membership.MANAGER)
    client.force_login(user)
    for url in ["/", f"/p/{project.slug}/"]:
        page = client.get(url).content.decode()
        assert_nothing_runs_or_loads(page)
    assert "<h1>Rules</h1>" in client.get(f"/p/{project.slug}/").content.decode()


def test_script_in_an_item_or_guidelines_never_reaches_the_annotation_page(annotator, annotator_client, project):
    Project.objects.filter(pk=project.pk).update(guidelines="# Rules\n\n" + XSS_PROMPT)
    ItemFactory(project=project, external_id="xss-3", prompt=XSS_PROMPT, responses=[XSS_PROMPT, "plain answer"])
    response = annotator_client.get(f"/p/{project.slug}/annotate/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "plain answer" in page  # the item was served to the annotator
    assert "<h1>Rules</h1>" in page
    assert_nothing_runs_or_loads(page)


# --- static files, headers ------------------------------------------------------------------


def test_htmx_is_served_from_our_own_static_files(client):
    response = client.get("/static/webapp/htmx.min.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert b"htmx" in body
    assert len(body) > 10_000


def test_pages_load_htmx_locally_and_nothing_from_a_cdn(member_client, project, item):
    for url in ["/", f"/p/{project.slug}/", f"/p/{project.slug}/items/{item.pk}/", "/login/"]:
        page = member_client.get(url).content.decode()
        scripts = [attrs.get("src") for tag, attrs in tags_of(page) if tag == "script"]
        assert scripts == ["/static/webapp/htmx.min.js"], url
        stylesheets = [attrs.get("href") for tag, attrs in tags_of(page) if tag == "link"]
        assert all(href and href.startswith("/static/") for href in stylesheets), url
        assert not re.search(r"""src=["']?(https?:)?//""", page), url


def test_pages_cannot_be_framed_or_sniffed(member_client, project):
    response = member_client.get(f"/p/{project.slug}/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


# --- logout and CSRF ------------------------------------------------------------------------


def test_logout_needs_a_post_with_the_csrf_token(member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    page = client.get("/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert 'action="/logout/"' in page

    assert client.get("/logout/").status_code == 405
    refused = client.post("/logout/")
    assert refused.status_code == 403
    assert client.get("/").status_code == 200  # still logged in

    response = client.post("/logout/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response.url == "/login/"
    assert client.get("/").status_code == 302  # logged out


def test_htmx_requests_carry_the_csrf_token_in_a_header(member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    page = client.get("/").content.decode()
    header = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page).group(1)
    assert client.post("/logout/", HTTP_X_CSRFTOKEN=header).status_code == 302

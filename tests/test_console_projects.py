"""The console's project pages: create and edit a project's scheme, its live preview, open and close it."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from tests.factories import ItemFactory, UserFactory
from webapp.models import HumanAnnotation, Judge, Judgment, Membership, Project

pytestmark = pytest.mark.django_db

FORM = {
    "name": "Helpfulness study",
    "slug": "helpfulness",
    "kind": "pairwise",
    "scale": "likert5",
    "aspects": "overall, helpful",
    "reasons": "overall: Follows the instruction\noverall: More accurate\nhelpful: More detailed",
    "rating_attributes": ["helpfulness", "verbosity"],
    "justification_required": "on",
    "justification_min_length": "15",
    "ask_confidence": "on",
    "overlap_normal": "3",
    "overlap_expert": "1",
    "human_budget": "250",
    "cost_per_human_annotation": "0.35",
    "guidelines": "Pick the **better** answer.",
}


@pytest.fixture
def admin() -> Any:
    return UserFactory(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def admin_client(admin: Any) -> Client:
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def manager_client(manager: Any) -> Client:
    client = Client()
    client.force_login(manager)
    return client


def field_error(html: str, field: str) -> str:
    """The text of the error shown next to a field (the page marks it with id="error-<field>")."""
    found = re.search(rf'<p class="field-error" id="error-{field}">(.*?)</p>', html, re.S)
    assert found, f"no error shown for {field}"
    return found.group(1)


def labelled(project: Project) -> None:
    item = ItemFactory(project=project)
    HumanAnnotation.objects.create(item=item, external_annotator="ext-1", preferences={"overall": "Tie"}, imported=True)


# --- creating ---------------------------------------------------------------------------------------


def test_an_admin_creates_a_draft_project_with_the_whole_scheme_and_becomes_its_manager(admin_client, admin):
    page = admin_client.get("/projects/new/").content.decode()
    assert 'name="aspects" value="overall, helpful, truthful, harmless"' in page  # the model's defaults
    assert 'hx-get="/projects/new/preview"' in page

    response = admin_client.post("/projects/new/", FORM)

    assert response.status_code == 302
    assert response.url == "/p/helpfulness/edit/"
    project = Project.objects.get(slug="helpfulness")
    assert project.state == Project.DRAFT
    assert project.name == "Helpfulness study"
    assert project.aspects == ["overall", "helpful"]
    assert project.reasons == {"overall": ["Follows the instruction", "More accurate"], "helpful": ["More detailed"]}
    assert project.rating_attributes == ["helpfulness", "verbosity"]
    assert project.justification_required
    assert project.justification_min_length == 15
    assert project.ask_confidence
    assert not project.allow_ties
    assert (project.overlap_normal, project.overlap_expert, project.human_budget) == (3, 1, 250)
    assert project.cost_per_human_annotation == Decimal("0.35")
    assert project.guidelines == "Pick the **better** answer."
    assert Membership.objects.filter(project=project, user=admin, role=Membership.MANAGER).exists()


def test_the_slug_comes_from_the_name_when_left_empty(admin_client):
    admin_client.post("/projects/new/", {**FORM, "slug": "", "name": "Code Review 2"})
    assert Project.objects.filter(slug="code-review-2").exists()


def test_bad_values_are_refused_with_the_error_next_to_each_field_and_the_form_kept(admin_client):
    bad = {
        **FORM,
        "slug": "Not A Slug",
        "aspects": "overall, over all!",
        "reasons": "overall: Fine\nthis line has no colon\nunknown: Some reason",
        "overlap_normal": "-1",
        "human_budget": "many",
        "cost_per_human_annotation": "0.123456",
        "name": "",
    }
    response = admin_client.post("/projects/new/", bad)

    assert response.status_code == 400
    html = response.content.decode()
    assert "The project was not saved" in html
    assert "is not a slug" in field_error(html, "slug")
    # The shared scheme validator's own words (webapp.scheme.validate_scheme_config).
    assert "&#x27;over all!&#x27; must be letters, digits, &#x27;-&#x27; or &#x27;_&#x27;" in field_error(
        html, "aspects"
    )
    reasons = field_error(html, "reasons")
    assert "line 2: write `aspect: reason`" in reasons
    assert "reasons given for unknown aspect &#x27;unknown&#x27;" in reasons
    assert "between 0 and 100" in field_error(html, "overlap_normal")
    assert "not a whole number" in field_error(html, "human_budget")
    assert "at most 4 decimal places" in field_error(html, "cost_per_human_annotation")
    assert "required" in field_error(html, "name")
    assert 'value="overall, over all!"' in html  # what was typed stays in the form
    assert not Project.objects.filter(name="").exists()
    assert Project.objects.count() == 0


def test_a_taken_slug_is_an_error_on_the_slug(admin_client, project):
    response = admin_client.post("/projects/new/", {**FORM, "slug": project.slug})
    assert response.status_code == 400
    assert "already exists" in field_error(response.content.decode(), "slug")


# --- editing ----------------------------------------------------------------------------------------


def test_a_manager_edits_the_scheme_of_a_project_without_labels(manager_client, project):
    page = manager_client.get(f"/p/{project.slug}/edit/").content.decode()
    assert f'hx-get="/p/{project.slug}/edit/preview"' in page
    response = manager_client.post(f"/p/{project.slug}/edit/", {**FORM, "kind": "ranking", "allow_ties": "on"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.kind == "ranking"
    assert project.allow_ties
    assert project.slug == "prefs"  # the slug never changes
    page = manager_client.get(response.url).content.decode()
    assert "Saved: name, guidelines, kind, aspects, reasons" in page


def test_changing_kind_scale_or_aspects_of_a_project_with_annotations_is_refused_and_nothing_is_saved(
    manager_client, project
):
    labelled(project)
    before = Project.objects.get(pk=project.pk)
    form = {
        **FORM,
        "kind": "pairwise",
        "scale": "strength7",
        "aspects": "overall, clarity",
        "reasons": "clarity: Shorter",
        "guidelines": "New guidelines",
    }

    response = manager_client.post(f"/p/{project.slug}/edit/", form)

    assert response.status_code == 400
    html = response.content.decode()
    assert (
        "cannot change scale from likert5 to strength7: the project has 1 human annotation(s), "
        "which would no longer match it" in field_error(html, "scale")
    )
    assert "cannot change aspects from overall, helpful, truthful, harmless to overall, clarity" in field_error(
        html, "aspects"
    )
    after = Project.objects.get(pk=project.pk)
    assert (after.scale, after.aspects, after.guidelines) == (before.scale, before.aspects, before.guidelines)
    assert "Kind, scale and aspects are fixed now" in manager_client.get(f"/p/{project.slug}/edit/").content.decode()


def test_other_fields_of_a_labelled_project_may_change(manager_client, project):
    labelled(project)
    form = {
        **FORM,
        "aspects": "overall, helpful, truthful, harmless",
        "reasons": "overall: Clearer",
        "overlap_normal": "5",
        "guidelines": "Read twice.",
        "cost_per_human_annotation": "1.25",
    }
    response = manager_client.post(f"/p/{project.slug}/edit/", form)
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.overlap_normal, project.guidelines, project.reasons) == (5, "Read twice.", {"overall": ["Clearer"]})
    assert project.cost_per_human_annotation == Decimal("1.25")


def test_llm_judgments_lock_the_scheme_too(manager_client, project):
    item = ItemFactory(project=project)
    judge = Judge.objects.create(name="gpt", backend=Judge.EXTERNAL, model="gpt")
    Judgment.objects.create(
        item=item, judge=judge, order="combined", prompt_version="v1", labels={"overall": "Tie"}, status=Judgment.DONE
    )
    response = manager_client.post(f"/p/{project.slug}/edit/", {**FORM, "aspects": "overall", "reasons": ""})
    assert response.status_code == 400
    assert "1 LLM judgment(s)" in field_error(response.content.decode(), "aspects")


def test_a_ranking_project_with_three_responses_per_item_cannot_become_pairwise(manager_client, project):
    project.kind = "ranking"
    project.save()
    ItemFactory(project=project, responses=["a", "b", "c"])
    response = manager_client.post(
        f"/p/{project.slug}/edit/", {**FORM, "aspects": "overall, helpful, truthful, harmless"}
    )
    assert response.status_code == 400
    assert "1 item(s) do not have exactly 2 responses" in field_error(response.content.decode(), "kind")


# --- the live preview -------------------------------------------------------------------------------


def test_the_preview_renders_the_annotation_form_with_the_current_unsaved_values(manager_client, project):
    ItemFactory(project=project, external_id="first-item", prompt="What is the capital of France?")
    values = {
        **FORM,
        "scale": "strength7",
        "aspects": "clarity, safety",
        "reasons": "clarity: Too long",
        "rating_attributes": ["correctness"],
        "justification_min_length": "20",
        "guidelines": "Be **kind**.",
    }

    response = manager_client.get(f"/p/{project.slug}/edit/preview", values, headers={"HX-Request": "true"})

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="preview"')  # the partial only
    assert "<html" not in html
    assert "the project&#x27;s first item, first-item" in html
    assert "What is the capital of France?" in html
    # The annotate page's own questions partial, for this scheme.
    assert 'data-aspect="clarity"' in html
    assert 'data-aspect="safety"' in html
    assert 'data-aspect="overall"' not in html
    assert "A much better" in html  # strength7's labels
    assert 'name="pref-clarity" value="-3"' in html
    assert 'name="reasons-clarity" value="Too long"' in html
    assert 'name="rating-0-correctness"' in html
    assert 'name="rating-1-correctness"' in html
    assert "(required, at least 20 characters)" in html
    assert "How confident are you?" in html
    assert "<strong>kind</strong>" in html  # the guidelines' Markdown
    assert 'method="dialog"' in html  # submitting the preview goes nowhere
    project.refresh_from_db()
    assert project.aspects == ["overall", "helpful", "truthful", "harmless"]  # nothing saved


def test_the_preview_of_a_ranking_scheme_for_a_new_project_uses_the_built_in_example(admin_client):
    response = admin_client.get(
        "/projects/new/preview", {**FORM, "kind": "ranking", "allow_ties": "on"}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert "a built-in example" in html
    assert "Rank the responses, best first" in html
    assert html.count('name="rank-') == 3
    assert "T</kbd> to tie" in html


def test_the_preview_lists_the_problems_and_shows_the_saved_value_for_those_fields(manager_client, project):
    response = manager_client.get(
        f"/p/{project.slug}/edit/preview", {**FORM, "aspects": "bad aspect!"}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert 'id="preview-problems"' in html
    assert "aspects: &#x27;bad aspect!&#x27; must be letters" in html
    assert 'data-aspect="harmless"' in html  # the saved aspects


def test_without_htmx_the_preview_is_the_whole_page_with_the_form_as_typed(manager_client, project):
    response = manager_client.get(f"/p/{project.slug}/edit/preview", {**FORM, "aspects": "clarity"})
    html = response.content.decode()
    assert "<html" in html
    assert 'name="aspects" value="clarity"' in html
    assert 'data-aspect="clarity"' in html


def test_the_preview_of_imported_text_runs_no_script(manager_client, project):
    from tests.test_views import XSS_PROMPT, assert_nothing_runs_or_loads

    ItemFactory(project=project, prompt=XSS_PROMPT, responses=[XSS_PROMPT, "fine"])
    response = manager_client.get(
        f"/p/{project.slug}/edit/preview", {**FORM, "guidelines": XSS_PROMPT}, headers={"HX-Request": "true"}
    )
    assert_nothing_runs_or_loads(response.content.decode())


# --- open and close ---------------------------------------------------------------------------------


def test_a_manager_opens_and_closes_the_project_with_posted_buttons(manager_client, project):
    project.state = Project.DRAFT
    project.save()
    page = manager_client.get(f"/p/{project.slug}/edit/").content.decode()
    assert "Open for annotation" in page
    assert 'name="csrfmiddlewaretoken"' in page

    assert manager_client.post(f"/p/{project.slug}/state", {"state": "active"}).status_code == 302
    project.refresh_from_db()
    assert project.state == Project.ACTIVE
    assert "Close" in manager_client.get(f"/p/{project.slug}/edit/").content.decode()

    manager_client.post(f"/p/{project.slug}/state", {"state": "closed"})
    project.refresh_from_db()
    assert project.state == Project.CLOSED
    manager_client.post(f"/p/{project.slug}/state", {"state": "archived"})
    project.refresh_from_db()
    assert project.state == Project.CLOSED


def test_the_state_buttons_need_the_csrf_token(manager, project):
    client = Client(enforce_csrf_checks=True)
    client.force_login(manager)
    assert client.post(f"/p/{project.slug}/state", {"state": "closed"}).status_code == 403
    project.refresh_from_db()
    assert project.state == Project.ACTIVE

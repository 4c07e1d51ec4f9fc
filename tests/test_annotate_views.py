"""The annotation pages through Django's test client: workspace, htmx submit, errors, access, CSRF, edits."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import AnnotatorProfileFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp import scheme as sch
from webapp.models import AnnotationRevision, AnnotatorProfile, Assignment, HumanAnnotation, Membership, Project

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
XSS_IMG = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def study() -> Project:
    return ProjectFactory(
        slug="study",
        name="Helpfulness study",
        guidelines="Prefer the **more helpful** answer.",
        aspects=["overall", "helpful"],
        reasons={"overall": ["more accurate", "clearer"]},
        rating_attributes=["helpfulness"],
        justification_required=True,
        justification_min_length=20,
        overlap_normal=1,
    )


@pytest.fixture
def items(study: Project) -> list[Any]:
    return [
        ItemFactory(
            project=study,
            external_id=f"q-{k}",
            prompt=f"Question number {k}?",
            responses=[f"canonical zero of {k}", f"canonical one of {k}"],
        )
        for k in range(3)
    ]


def login(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def member(project: Project, name: str, role: str = Membership.ANNOTATOR, quota: int | None = None) -> Any:
    user = UserFactory(username=name)
    MembershipFactory(project=project, user=user, role=role, quota=quota)
    return user


@pytest.fixture
def alice(study: Project) -> Any:
    return member(study, "alice")


@pytest.fixture
def alice_client(alice: Any) -> Client:
    return login(alice)


def good_answer(**overrides: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pref-overall": "A-is-clearly-better",
        "pref-helpful": "A-is-slightly-better",
        "reasons-overall": ["clearer"],
        "confidence": "fairly-confident",
        "justification": "Response A answers the question directly.",
        "rating-0-helpfulness": "4",
        "rating-1-helpfulness": "1",
        "active_seconds": "42.5",
    }
    data.update(overrides)
    return data


def current(user: Any) -> Assignment:
    return Assignment.objects.select_related("item").get(annotator=user, status=Assignment.LEASED)


def submit_url(project: Project, assignment: Assignment) -> str:
    return f"/p/{project.slug}/annotate/{assignment.pk}/submit"


def shown_texts(html: str) -> list[str]:
    return re.findall(r"canonical (?:zero|one|two) of \d", html)


# --- the workspace --------------------------------------------------------------------------


def test_the_annotate_page_shows_the_item_the_questions_and_the_shortcuts(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    response = alice_client.get(f"/p/{study.slug}/annotate/")
    assert response.status_code == 200
    page = response.content.decode()
    assignment = current(alice)

    assert assignment.item == items[0]
    assert "Question number 0?" in page
    assert "<strong>more helpful</strong>" in page  # guidelines, as markdown
    # Both responses, side by side, in the order recorded on the assignment.
    assert 'class="responses"' in page
    expected = [f"canonical {('zero', 'one')[k]} of 0" for k in assignment.display_order]
    assert shown_texts(page) == expected
    assert "Response A" in page
    assert "Response B" in page
    # Every question of the scheme.
    for name in ["pref-overall", "pref-helpful", "reasons-overall", "confidence", "justification"]:
        assert f'name="{name}"' in page
    for k in range(2):
        assert f'name="rating-{k}-helpfulness"' in page
    assert "A is clearly better" in page
    assert "(required, at least 20 characters)" in page
    # The keyboard legend.
    assert 'class="shortcuts' in page
    for key in [
        "<kbd>Tab</kbd> next question",
        "<kbd>Ctrl</kbd>+<kbd>Enter</kbd> submit",
        "<kbd>Alt</kbd>+<kbd>S</kbd> skip",
    ]:
        assert key in page
    assert "<kbd>1</kbd>\u2013<kbd>5</kbd>" in page  # an en dash
    assert 'id="progress"' in page
    assert "0 / 3 done" in page
    assert f'hx-post="/p/{study.slug}/annotate/{assignment.pk}/submit"' in page
    assert "webapp/annotate.js" in page
    # No template source shown as text (a {# comment #} spanning lines is not a comment to Django).
    for syntax in ("{#", "#}", "{%", "%}", "{{", "}}"):
        assert syntax not in page


def test_reloading_the_page_shows_the_same_item(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    first = alice_client.get(f"/p/{study.slug}/annotate/").content.decode()
    second = alice_client.get(f"/p/{study.slug}/annotate/").content.decode()
    assert shown_texts(first) == shown_texts(second)
    assert Assignment.objects.filter(annotator=alice).count() == 1


def test_a_ranking_project_stacks_its_responses_with_a_rank_list(alice: Any) -> None:
    project = ProjectFactory(slug="rank", kind=sch.RANKING, aspects=["overall"], allow_ties=True)
    MembershipFactory(project=project, user=alice)
    ItemFactory(project=project, responses=["one", "two", "three"])
    page = login(alice).get(f"/p/{project.slug}/annotate/").content.decode()
    assert 'class="stack"' in page
    assert 'id="ranking-list"' in page
    assert 'data-allow-ties="1"' in page
    assert page.count('draggable="true"') == 3
    assert "to tie it with the one above" in page
    assert 'name="pref-overall"' not in page


def test_a_conversation_is_shown_turn_by_turn(alice: Any, study: Project) -> None:
    ItemFactory(
        project=study,
        prompt="",
        conversation=[
            {"role": "user", "content": "Hello *there*"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "Name a prime."},
        ],
    )
    page = login(alice).get(f"/p/{study.slug}/annotate/").content.decode()
    assert page.count('class="turn ') == 3
    assert "<em>there</em>" in page
    assert "Name a prime." in page


def test_script_in_an_item_is_not_sent_to_the_annotator(study: Project, alice: Any) -> None:
    ItemFactory(
        project=study,
        prompt="\n\n".join(["<script>window.__xss=1</script>", XSS_IMG, "[x](javascript:window.__xss=1)"]),
        responses=["<script>window.__xss=1</script>", XSS_IMG],
    )
    page = login(alice).get(f"/p/{study.slug}/annotate/").content.decode()
    assert "<script>window.__xss" not in page
    assert "onerror" not in page
    assert "javascript:" not in page
    assert "<img" not in page


# --- submit ---------------------------------------------------------------------------------


def test_an_htmx_submit_swaps_in_the_next_item_and_the_progress(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    first = current(alice)

    response = alice_client.post(submit_url(study, first), good_answer(), **HTMX)

    assert response.status_code == 200
    page = response.content.decode()
    assert page.lstrip().startswith('<section id="workspace"')  # the partial, not a whole page
    assert "<html" not in page
    assert "Saved." in page
    assert "1 / 3 done" in page
    second = current(alice)
    assert second.item == items[1]
    assert "Question number 1?" in page
    assert f'data-assignment="{second.pk}"' in page
    assert f'hx-post="{submit_url(study, second)}"' in page

    annotation = HumanAnnotation.objects.get(assignment=first)
    assert annotation.time_spent == 42.5
    assert annotation.justification == "Response A answers the question directly."


def test_a_plain_submit_redirects_to_the_next_item(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    first = current(alice)

    response = alice_client.post(submit_url(study, first), good_answer())
    assert response.status_code in (302, 303)
    assert response.url == f"/p/{study.slug}/annotate/"
    page = alice_client.get(response.url).content.decode()
    assert "Saved." in page
    assert "1 / 3 done" in page
    assert "Question number 1?" in page


def test_the_shown_order_is_mapped_back_to_canonical_on_submit(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    Assignment.objects.filter(pk=assignment.pk).update(display_order=[1, 0])
    page = alice_client.get(f"/p/{study.slug}/annotate/").content.decode()
    assert shown_texts(page) == ["canonical one of 0", "canonical zero of 0"]

    alice_client.post(submit_url(study, assignment), good_answer(), **HTMX)

    annotation = HumanAnnotation.objects.get(assignment=assignment)
    assert annotation.preferences == {"overall": "B-is-clearly-better", "helpful": "B-is-slightly-better"}
    assert annotation.ratings == {"1": {"helpfulness": 4}, "0": {"helpfulness": 1}}
    assert annotation.reasons == {"overall": ["clearer"]}
    assert annotation.confidence == {"overall": "fairly-confident"}


def test_a_ranking_without_script_is_read_from_the_rank_fields(alice: Any) -> None:
    project = ProjectFactory(slug="rank", kind=sch.RANKING, aspects=["overall"], ask_confidence=False)
    MembershipFactory(project=project, user=alice)
    ItemFactory(project=project, responses=["zero", "one", "two"])
    client = login(alice)
    client.get(f"/p/{project.slug}/annotate/")
    assignment = current(alice)
    Assignment.objects.filter(pk=assignment.pk).update(display_order=[2, 0, 1])

    response = client.post(
        submit_url(project, assignment), {"rank-0": "3", "rank-1": "1", "rank-2": "2", "justification": ""}, **HTMX
    )
    assert response.status_code == 200
    assert "Saved." in response.content.decode()
    # Shown B (canonical 0) best, then shown C (canonical 1), then shown A (canonical 2).
    assert HumanAnnotation.objects.get(assignment=assignment).ranking == [0, 1, 2]


def test_a_short_justification_is_shown_inline_and_the_answers_stay(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    answer = good_answer(justification="Too short.", **{"pref-helpful": "Tie"})

    response = alice_client.post(submit_url(study, assignment), answer, **HTMX)

    assert response.status_code == 200
    page = response.content.decode()
    assert page.lstrip().startswith('<section id="workspace"')
    assert 'id="justification-error"' in page
    assert "needs at least 20 characters (has 10)" in page
    assert 'class="invalid"' in page
    assert ">Too short.</textarea>" in page
    assert re.search(r'name="pref-overall" value="A-is-clearly-better"[^>]*\s+checked', page)
    assert re.search(r'name="pref-helpful" value="Tie"[^>]*\s+checked', page)
    assert re.search(r'value="clearer"\s+checked', page)
    assert re.search(r'name="confidence" value="fairly-confident"[^>]*\s+checked', page)
    assert re.search(r'<option value="4" selected>', page)
    assert 'name="active_seconds" value="42.5"' in page
    assert "Saved." not in page
    assert not HumanAnnotation.objects.exists()
    assert current(alice).pk == assignment.pk  # still the same item

    # Without htmx the whole page comes back, with 422.
    plain = alice_client.post(submit_url(study, assignment), answer)
    assert plain.status_code == 422
    assert "<html" in plain.content.decode()
    assert "needs at least 20 characters" in plain.content.decode()


def test_missing_answers_are_marked_on_their_questions(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    answer = good_answer()
    del answer["pref-helpful"], answer["confidence"]
    page = alice_client.post(submit_url(study, assignment), answer, **HTMX).content.decode()
    assert "missing aspects: helpful" in page
    assert "a confidence answer is required" in page
    assert re.search(r'class="aspect invalid" data-aspect="helpful"', page)
    assert not re.search(r'class="aspect invalid" data-aspect="overall"', page)


def test_a_double_submit_stores_one_annotation(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    alice_client.post(submit_url(study, assignment), good_answer(), **HTMX)
    again = alice_client.post(
        submit_url(study, assignment), good_answer(justification="Sent twice by a retry."), **HTMX
    )
    assert again.status_code == 200
    assert "Already saved" in again.content.decode()
    assert HumanAnnotation.objects.filter(item=assignment.item).count() == 1
    assert (
        HumanAnnotation.objects.get(item=assignment.item).justification == "Response A answers the question directly."
    )


def test_a_submit_after_the_slot_was_lost_keeps_the_answers(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    mine = current(alice)
    Assignment.objects.filter(pk=mine.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    bob = member(study, "bob")
    login(bob).get(f"/p/{study.slug}/annotate/")
    assert current(bob).item == mine.item  # overlap 1: bob took the freed slot

    response = alice_client.post(submit_url(study, mine), good_answer(), **HTMX)
    page = response.content.decode()
    assert response.status_code == 200
    assert "another annotator took it" in page
    assert "Your answers are still in the form" in page
    assert "Response A answers the question directly.</textarea>" in page
    assert not HumanAnnotation.objects.filter(annotator=alice).exists()
    assert alice_client.post(submit_url(study, mine), good_answer()).status_code == 409


def test_a_submit_after_the_lease_expired_is_saved_while_the_slot_is_free(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    mine = current(alice)
    Assignment.objects.filter(pk=mine.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    response = alice_client.post(submit_url(study, mine), good_answer(), **HTMX)
    assert "Saved." in response.content.decode()
    assert HumanAnnotation.objects.filter(assignment=mine).exists()


# --- skip -----------------------------------------------------------------------------------


def test_a_skip_needs_a_reason_and_then_moves_on(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    skip_url = f"/p/{study.slug}/annotate/{assignment.pk}/skip"

    refused = alice_client.post(skip_url, {"skip_reason": "  "}, **HTMX)
    page = refused.content.decode()
    assert refused.status_code == 200
    assert "say why you skip this item" in page
    assert re.search(r'<form id="skip-form"[^>]*>', page)
    assert not re.search(r'<form id="skip-form"[^>]*\shidden', page)  # the skip form stays open
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.LEASED

    response = alice_client.post(skip_url, {"skip_reason": "Outside my expertise"}, **HTMX)
    assert "Skipped." in response.content.decode()
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.SKIPPED
    assert Assignment.objects.get(pk=assignment.pk).skip_reason == "Outside my expertise"
    assert current(alice).item == items[1]


# --- who may do what ------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(study: Project, items: list[Any], alice: Any) -> None:
    client = Client()
    for url in [f"/p/{study.slug}/annotate/", "/"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith("/login/?next=")
    assignment = Assignment.objects.create(
        item=items[0], annotator=alice, display_order=[0, 1], lease_expires_at=timezone.now() + timedelta(minutes=5)
    )
    response = client.post(submit_url(study, assignment), good_answer())
    assert response.status_code == 302
    assert response.url.startswith("/login/?next=")
    assert not HumanAnnotation.objects.exists()


def test_non_members_are_refused(study: Project, items: list[Any], alice: Any) -> None:
    outsider = login(UserFactory(username="outsider"))
    alice_client = login(alice)
    alice_client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    for response in [
        outsider.get(f"/p/{study.slug}/annotate/"),
        outsider.post(submit_url(study, assignment), good_answer()),
        outsider.post(f"/p/{study.slug}/annotate/{assignment.pk}/skip", {"skip_reason": "x"}),
    ]:
        assert response.status_code == 403
        assert "Question number" not in response.content.decode()
    assert not Assignment.objects.exclude(annotator=alice).exists()
    assert not HumanAnnotation.objects.exists()
    assert outsider.get("/p/no-such-project/annotate/").status_code == 404


def test_someone_elses_assignment_is_403(study: Project, items: list[Any], alice: Any, alice_client: Client) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    mallory = login(member(study, "mallory"))
    assert mallory.post(submit_url(study, assignment), good_answer()).status_code == 403
    assert mallory.post(submit_url(study, assignment), good_answer(), **HTMX).status_code == 403
    assert mallory.post(f"/p/{study.slug}/annotate/{assignment.pk}/skip", {"skip_reason": "x"}).status_code == 403
    assert mallory.post(f"/p/{study.slug}/annotate/999999/submit", good_answer()).status_code == 403
    assert not HumanAnnotation.objects.exists()
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.LEASED


def test_an_assignment_of_another_project_is_403(study: Project, items: list[Any], alice: Any) -> None:
    other = ProjectFactory(slug="other")
    MembershipFactory(project=other, user=alice)
    ItemFactory(project=other)
    client = login(alice)
    client.get(f"/p/{other.slug}/annotate/")
    theirs = current(alice)
    assert client.post(submit_url(study, theirs), good_answer()).status_code == 403


def test_posts_need_the_csrf_token(study: Project, items: list[Any], alice: Any) -> None:
    client = login(alice, enforce_csrf_checks=True)
    page = client.get(f"/p/{study.slug}/annotate/").content.decode()
    assignment = current(alice)
    url = submit_url(study, assignment)

    assert client.post(url, good_answer()).status_code == 403
    assert client.post(url, good_answer(), **HTMX).status_code == 403
    assert client.post(f"/p/{study.slug}/annotate/{assignment.pk}/skip", {"skip_reason": "x"}).status_code == 403
    assert not HumanAnnotation.objects.exists()

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert client.post(url, good_answer(csrfmiddlewaretoken=token)).status_code == 302
    assert HumanAnnotation.objects.count() == 1
    # htmx sends it as a header, from the page's hx-headers.
    header = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page).group(1)  # type: ignore[union-attr]
    client.get(f"/p/{study.slug}/annotate/")
    second = current(alice)
    assert client.post(submit_url(study, second), good_answer(), HTTP_X_CSRFTOKEN=header, **HTMX).status_code == 200
    assert HumanAnnotation.objects.count() == 2


def test_the_annotate_page_is_get_only_and_submit_is_post_only(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    alice_client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    assert alice_client.post(f"/p/{study.slug}/annotate/").status_code == 405
    assert alice_client.get(submit_url(study, assignment)).status_code == 405


def test_an_annotator_works_from_the_queue_and_never_sees_items_or_labels(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    HumanAnnotation.objects.create(item=items[0], external_annotator="rater-7", justification="rater 7's secret")
    response = alice_client.get(f"/p/{study.slug}/")
    assert response.status_code == 302
    assert response.url == f"/p/{study.slug}/annotate/"
    item_page = alice_client.get(f"/p/{study.slug}/items/{items[0].pk}/")
    assert item_page.status_code == 403
    assert "rater 7&#x27;s secret" not in item_page.content.decode()
    assert "rater 7's secret" not in item_page.content.decode()
    assert "rater 7" not in alice_client.get(f"/p/{study.slug}/annotate/").content.decode()


def test_a_manager_still_browses_the_project(study: Project, items: list[Any]) -> None:
    manager = login(member(study, "boss", role=Membership.MANAGER))
    assert manager.get(f"/p/{study.slug}/").status_code == 200
    assert manager.get(f"/p/{study.slug}/items/{items[0].pk}/").status_code == 200


def test_a_closed_project_or_a_paused_annotator_gets_no_item(study: Project, items: list[Any], alice: Any) -> None:
    client = login(alice)
    Project.objects.filter(pk=study.pk).update(state=Project.CLOSED)
    page = client.get(f"/p/{study.slug}/annotate/").content.decode()
    assert "This project is not open for annotation." in page
    assert "Nothing left for you" in page
    assert "Question number" not in page

    Project.objects.filter(pk=study.pk).update(state=Project.ACTIVE)
    AnnotatorProfile.objects.update_or_create(user=alice, defaults={"active": False})
    page = client.get(f"/p/{study.slug}/annotate/").content.decode()
    assert "Your account is paused." in page
    assert not Assignment.objects.exists()


def test_nothing_left_says_so(study: Project, alice: Any) -> None:
    item = ItemFactory(project=study)
    HumanAnnotation.objects.create(item=item, external_annotator="x", preferences={})
    bob = member(study, "bob")
    login(bob).get(f"/p/{study.slug}/annotate/")  # overlap 1: bob holds the only slot
    page = login(alice).get(f"/p/{study.slug}/annotate/").content.decode()
    assert "Nothing left for you in this project right now." in page


def test_an_expert_in_the_project_sees_their_progress_against_the_quota(study: Project, items: list[Any]) -> None:
    expert = member(study, "erin", quota=2)
    AnnotatorProfileFactory(user=expert, tier=AnnotatorProfile.EXPERT)
    Project.objects.filter(pk=study.pk).update(overlap_expert=1)
    page = login(expert).get(f"/p/{study.slug}/annotate/").content.decode()
    assert "0 / 2 done" in page
    assert Assignment.objects.get(annotator=expert).tier == AnnotatorProfile.EXPERT


# --- home and edits -------------------------------------------------------------------------


def _annotate_first(study: Project, alice: Any, client: Client, order: list[int]) -> HumanAnnotation:
    client.get(f"/p/{study.slug}/annotate/")
    assignment = current(alice)
    Assignment.objects.filter(pk=assignment.pk).update(display_order=order)
    client.post(submit_url(study, assignment), good_answer(), **HTMX)
    return HumanAnnotation.objects.get(assignment=assignment)


def test_the_home_page_shows_progress_and_recent_work_with_an_edit_link(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    annotation = _annotate_first(study, alice, alice_client, [0, 1])
    page = alice_client.get("/").content.decode()
    assert study.name in page
    assert "1 / 3" in page
    assert f'href="/p/{study.slug}/annotate/"' in page
    assert "My recent work" in page
    assert "q-0" in page
    assert "overall: A-is-clearly-better" in page
    assert f'href="/p/{study.slug}/annotations/{annotation.pk}/edit"' in page

    Project.objects.filter(pk=study.pk).update(state=Project.CLOSED)
    page = alice_client.get("/").content.decode()
    assert "q-0" in page
    assert "/edit" not in page  # editable only while the project is open
    assert f'href="/p/{study.slug}/annotate/"' not in page


def test_the_edit_page_shows_the_answers_in_the_order_shown_and_saves_a_revision(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    annotation = _annotate_first(study, alice, alice_client, [1, 0])
    assert annotation.preferences["overall"] == "B-is-clearly-better"  # canonical
    url = f"/p/{study.slug}/annotations/{annotation.pk}/edit"

    page = alice_client.get(url).content.decode()
    assert "Edit your annotation" in page
    assert shown_texts(page) == ["canonical one of 0", "canonical zero of 0"]
    # Pre-filled as the annotator gave it, on the order shown.
    assert re.search(r'name="pref-overall" value="A-is-clearly-better"[^>]*\s+checked', page)
    assert re.search(r'name="pref-helpful" value="A-is-slightly-better"[^>]*\s+checked', page)
    assert re.search(r'name="rating-0-helpfulness".*?<option value="4" selected>', page, re.S)
    assert re.search(r'name="rating-1-helpfulness".*?<option value="1" selected>', page, re.S)
    assert re.search(r'value="clearer"\s+checked', page)
    assert "Response A answers the question directly.</textarea>" in page
    assert f'action="{url}"' in page
    assert "hx-post" not in page.split('id="annotation-form"')[1].split(">")[0]
    assert "Save changes" in page

    response = alice_client.post(
        url, good_answer(**{"pref-overall": "Tie", "justification": "On reflection the two are equally good."})
    )
    assert response.status_code == 302
    assert response.url == "/"
    annotation.refresh_from_db()
    assert annotation.preferences == {"overall": "Tie", "helpful": "B-is-slightly-better"}
    assert annotation.justification == "On reflection the two are equally good."
    revision = AnnotationRevision.objects.get(annotation=annotation)
    assert revision.payload["preferences"] == {"overall": "B-is-clearly-better", "helpful": "B-is-slightly-better"}
    assert revision.edited_by == alice
    home = alice_client.get("/").content.decode()
    assert "was updated" in home
    assert "(edited 1\u00d7)" in home


def test_an_edit_keeps_the_time_already_spent(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    annotation = _annotate_first(study, alice, alice_client, [0, 1])
    assert annotation.time_spent == 42.5
    url = f"/p/{study.slug}/annotations/{annotation.pk}/edit"
    page = alice_client.get(url).content.decode()
    # The page's timer starts from the stored time, and a form sent back as it is keeps it.
    assert 'name="active_seconds" value="42.5"' in page
    sent_back = re.search(r'name="active_seconds" value="([^"]*)"', page).group(1)  # type: ignore[union-attr]
    alice_client.post(
        url, good_answer(justification="Edited without the page's script running.", active_seconds=sent_back)
    )
    annotation.refresh_from_db()
    assert annotation.justification == "Edited without the page's script running."
    assert annotation.time_spent == 42.5


def test_a_ranking_edit_is_prefilled_in_the_order_shown(alice: Any) -> None:
    project = ProjectFactory(slug="rank", kind=sch.RANKING, aspects=["overall"], ask_confidence=False)
    MembershipFactory(project=project, user=alice)
    ItemFactory(project=project, responses=["zero", "one", "two"])
    client = login(alice)
    client.get(f"/p/{project.slug}/annotate/")
    assignment = current(alice)
    Assignment.objects.filter(pk=assignment.pk).update(display_order=[2, 0, 1])
    client.post(submit_url(project, assignment), {"ranking": "[1, 2, 0]"}, **HTMX)
    annotation = HumanAnnotation.objects.get(assignment=assignment)
    assert annotation.ranking == [0, 1, 2]

    url = f"/p/{project.slug}/annotations/{annotation.pk}/edit"
    page = client.get(url).content.decode()
    assert 'id="ranking-input" value="[1, 2, 0]"' in page
    client.post(url, {"ranking": "[0, 1, 2]"})
    annotation.refresh_from_db()
    assert annotation.ranking == [2, 0, 1]
    assert AnnotationRevision.objects.get(annotation=annotation).payload["ranking"] == [0, 1, 2]


def test_an_invalid_edit_is_shown_with_its_errors(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    annotation = _annotate_first(study, alice, alice_client, [0, 1])
    url = f"/p/{study.slug}/annotations/{annotation.pk}/edit"
    response = alice_client.post(url, good_answer(justification="short"))
    assert response.status_code == 422
    assert "needs at least 20 characters" in response.content.decode()
    assert not AnnotationRevision.objects.exists()


def test_edits_are_refused_after_the_close_and_to_others(
    study: Project, items: list[Any], alice: Any, alice_client: Client
) -> None:
    annotation = _annotate_first(study, alice, alice_client, [0, 1])
    url = f"/p/{study.slug}/annotations/{annotation.pk}/edit"
    mallory = login(member(study, "mallory"))
    assert mallory.get(url).status_code == 404
    assert mallory.post(url, good_answer()).status_code == 404

    Project.objects.filter(pk=study.pk).update(state=Project.CLOSED)
    response = alice_client.post(url, good_answer(justification="Changed after the project closed."))
    assert response.status_code == 302
    assert not AnnotationRevision.objects.exists()
    assert "can no longer change" in alice_client.get("/").content.decode()

"""The annotation page in a real headless chromium: keyboard-only work, htmx swaps, ranking, no XSS."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp import scheme as sch
from webapp.models import Assignment, HumanAnnotation, Item, Membership, Project

pytestmark = [
    pytest.mark.skipif(shutil.which("chromedriver") is None, reason="make test installs chromium-driver"),
    pytest.mark.django_db(transaction=True),
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "correct-horse-battery"
XSS = '<script>window.__xss=1</script>\n\n<img src=x onerror="window.__xss=1">\n\n[x](javascript:window.__xss=1)'


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def screenshot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def log_in(browser: Any, live_server: Any, username: str, next_path: str) -> None:
    browser.get(f"{live_server.url}/login/?next={next_path}")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "main button[type=submit]").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "workspace")))


def annotator_in(project: Project, username: str) -> Any:
    user = UserFactory(username=username, password=PASSWORD)
    MembershipFactory(project=project, user=user, role=Membership.ANNOTATOR)
    return user


def keys(browser: Any, *sequence: str) -> None:
    ActionChains(browser).send_keys(*sequence).perform()


def chord(browser: Any, modifier: str, key: str) -> None:
    ActionChains(browser).key_down(modifier).send_keys(key).key_up(modifier).perform()


def focused(browser: Any) -> dict[str, Any]:
    return browser.execute_script(
        "const e = document.activeElement;"
        "return {tag: e.tagName, name: e.name || '', value: e.value || '', index: e.dataset ? e.dataset.index : null};"
    )


def progress(browser: Any) -> str:
    return browser.find_element(By.ID, "progress").text


def wait_for_progress(browser: Any, text: str) -> None:
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "progress"), text))


def workspace_assignment(browser: Any) -> int:
    return int(browser.find_element(By.ID, "workspace").get_attribute("data-assignment"))


def wait_for_new_assignment(browser: Any, old: int) -> int:
    # htmx may swap #workspace between finding it and reading it: try again then.
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda b: b.find_element(By.ID, "workspace").get_attribute("data-assignment") not in ("", str(old))
    )
    return workspace_assignment(browser)


def mark_page(browser: Any) -> None:
    """A window variable that a full page load would wipe out."""
    browser.execute_script("window.__stay = 'same page';")


def same_page(browser: Any) -> bool:
    return browser.execute_script("return window.__stay;") == "same page"


def canonical_pairwise(shown: dict[str, str], order: list[int]) -> dict[str, str]:
    return {aspect: sch.mirror_label(label) if order == [1, 0] else label for aspect, label in shown.items()}  # type: ignore[misc]


# --- pairwise, keyboard only ----------------------------------------------------------------


def test_three_pairwise_items_with_the_keyboard_only(live_server: Any, browser: Any) -> None:
    project = ProjectFactory(
        slug="kbd",
        name="Keyboard study",
        guidelines="Pick the **more helpful** response.",
        aspects=["overall", "helpful"],
        justification_required=True,
        justification_min_length=20,
        overlap_normal=1,
    )
    for k in range(3):
        ItemFactory(
            project=project,
            external_id=f"kbd-{k}",
            prompt=f"Prompt number {k}: explain *recursion*.",
            responses=[f"Canonical zero of {k}, with `code`.", f"Canonical one of {k}.\n\n- a list\n- of points"],
        )
    alice = annotator_in(project, "alice")
    log_in(browser, live_server, "alice", f"/p/{project.slug}/annotate/")
    url = browser.current_url
    assert url.endswith(f"/p/{project.slug}/annotate/")
    assert progress(browser) == "0 / 3 done"
    assert browser.find_element(By.CSS_SELECTOR, ".md em").text == "recursion"
    mark_page(browser)
    screenshot(browser, "annotate-pairwise-start")

    # Item 1: the page focuses the first question. Tab and Shift+Tab move between questions.
    assert focused(browser)["name"] == "pref-overall"
    keys(browser, Keys.TAB)
    assert focused(browser)["name"] == "pref-helpful"
    keys(browser, "4")  # helpful: B is slightly better; focus moves on to the confidence question
    assert focused(browser)["name"] == "confidence"
    chord(browser, Keys.SHIFT, Keys.TAB)
    assert focused(browser)["name"] == "pref-helpful"
    chord(browser, Keys.SHIFT, Keys.TAB)
    assert focused(browser)["name"] == "pref-overall"
    keys(browser, "2")  # overall: A is slightly better
    assert focused(browser)["name"] == "pref-helpful"
    keys(browser, Keys.TAB)
    assert focused(browser)["name"] == "confidence"
    keys(browser, "1")  # absolutely confident; focus moves to the justification
    assert focused(browser)["tag"] == "TEXTAREA"
    keys(browser, "Too short.")
    first = workspace_assignment(browser)
    chord(browser, Keys.CONTROL, Keys.ENTER)

    # The server's validation error, inline, with the answers kept.
    error = WebDriverWait(browser, 10).until(ec.visibility_of_element_located((By.ID, "justification-error")))
    assert "needs at least 20 characters" in error.text
    assert same_page(browser)
    assert browser.current_url == url
    assert progress(browser) == "0 / 3 done"
    assert workspace_assignment(browser) == first
    checked = browser.execute_script(
        "return Array.from(document.querySelectorAll('#annotation-form input[type=radio]:checked'))"
        ".map(e => e.name + '=' + e.value);"
    )
    assert checked == [
        "pref-overall=A-is-slightly-better",
        "pref-helpful=B-is-slightly-better",
        "confidence=absolutely-confident",
    ]
    assert focused(browser)["tag"] == "TEXTAREA"  # the field to fix has the focus
    assert not HumanAnnotation.objects.exists()
    screenshot(browser, "annotate-pairwise-validation-error")

    keys(browser, Keys.END, " B never explains the base case.")
    chord(browser, Keys.CONTROL, Keys.ENTER)
    wait_for_progress(browser, "1 / 3 done")
    second = wait_for_new_assignment(browser, first)
    assert same_page(browser)
    assert browser.current_url == url
    assert "Saved." in browser.find_element(By.ID, "workspace").text

    stored = HumanAnnotation.objects.get(assignment_id=first)
    order = Assignment.objects.get(pk=first).display_order
    assert stored.preferences == canonical_pairwise(
        {"overall": "A-is-slightly-better", "helpful": "B-is-slightly-better"}, order
    )
    assert stored.confidence == {"overall": "absolutely-confident"}
    assert stored.justification == "Too short. B never explains the base case."
    assert stored.time_spent is not None
    assert stored.time_spent > 0

    # Item 2: number keys straight through; the swapped-in item has the focus on its first question.
    assert focused(browser)["name"] == "pref-overall"
    keys(browser, "5", "3", "2")
    assert focused(browser)["tag"] == "TEXTAREA"
    keys(browser, "Both are fine, the second shown is better.")
    screenshot(browser, "annotate-pairwise-second-item")
    chord(browser, Keys.CONTROL, Keys.ENTER)
    wait_for_progress(browser, "2 / 3 done")
    third = wait_for_new_assignment(browser, second)
    assert same_page(browser)
    stored = HumanAnnotation.objects.get(assignment_id=second)
    order = Assignment.objects.get(pk=second).display_order
    assert stored.preferences == canonical_pairwise({"overall": "B-is-clearly-better", "helpful": "Tie"}, order)
    assert stored.confidence == {"overall": "fairly-confident"}

    # Item 3, with the tab hidden for a while: hidden time is not counted.
    started = time.monotonic()
    keys(browser, "1", "1", "3")
    browser.execute_script(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
        "document.dispatchEvent(new Event('visibilitychange'));"
    )
    time.sleep(3)
    browser.execute_script(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
        "document.dispatchEvent(new Event('visibilitychange'));"
    )
    keys(browser, "The first one shown is clearly better.")
    chord(browser, Keys.CONTROL, Keys.ENTER)
    wait_for_progress(browser, "3 / 3 done")
    elapsed = time.monotonic() - started
    assert same_page(browser)
    assert "Nothing left for you" in browser.find_element(By.ID, "workspace").text
    screenshot(browser, "annotate-pairwise-done")
    stored = HumanAnnotation.objects.get(assignment_id=third)
    assert stored.confidence == {"overall": "not-confident"}
    assert stored.time_spent is not None
    assert 0 < stored.time_spent < elapsed - 2.5, (stored.time_spent, elapsed)

    assert HumanAnnotation.objects.filter(annotator=alice).count() == 3
    assert set(Item.objects.filter(project=project).values_list("status", flat=True)) == {Item.COMPLETE}


def test_alt_s_opens_the_skip_form_and_skipping_moves_on(live_server: Any, browser: Any) -> None:
    project = ProjectFactory(slug="skip", aspects=["overall"], overlap_normal=1)
    ItemFactory.create_batch(2, project=project)
    alice = annotator_in(project, "alice")
    log_in(browser, live_server, "alice", f"/p/{project.slug}/annotate/")
    mark_page(browser)
    first = workspace_assignment(browser)
    assert not browser.find_element(By.ID, "skip-form").is_displayed()

    chord(browser, Keys.ALT, "s")
    assert browser.find_element(By.ID, "skip-form").is_displayed()
    assert focused(browser)["name"] == "skip_reason"
    keys(browser, "Outside my expertise", Keys.ENTER)
    second = wait_for_new_assignment(browser, first)
    assert same_page(browser)
    assert "Skipped." in browser.find_element(By.ID, "workspace").text
    assert Assignment.objects.get(pk=first).status == Assignment.SKIPPED
    assert Assignment.objects.get(pk=second).annotator == alice


# --- ranking --------------------------------------------------------------------------------

DRAG = """
const [source, target, after] = arguments;
const data = new DataTransfer();
const box = target.getBoundingClientRect();
const at = {clientX: box.left + 10, clientY: after ? box.bottom - 2 : box.top + 2};
const fire = (el, type, extra) => el.dispatchEvent(
  new DragEvent(type, Object.assign({bubbles: true, cancelable: true, dataTransfer: data}, extra || {})));
fire(source, 'dragstart');
fire(target, 'dragenter', at);
fire(target, 'dragover', at);
fire(target, 'drop', at);
fire(source, 'dragend');
"""


def shown_ranking(browser: Any) -> list[int]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#ranking-list li')).map(li => Number(li.dataset.index));"
    )


def ranking_item(browser: Any, shown_index: int) -> Any:
    return browser.find_element(By.CSS_SELECTOR, f'#ranking-list li[data-index="{shown_index}"]')


def test_ranking_by_drag_and_drop_and_by_keys(live_server: Any, browser: Any) -> None:
    project = ProjectFactory(
        slug="rank", kind=sch.RANKING, aspects=["overall"], allow_ties=True, ask_confidence=False, overlap_normal=1
    )
    for k in range(2):
        ItemFactory(project=project, external_id=f"rank-{k}", responses=["Zeroth answer.", "First answer.", "Second."])
    annotator_in(project, "alice")
    log_in(browser, live_server, "alice", f"/p/{project.slug}/annotate/")
    mark_page(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".stack .response")) == 3
    assert shown_ranking(browser) == [0, 1, 2]
    assert not browser.find_element(By.NAME, "rank-0").is_displayed()  # the no-script fallback is hidden

    # Drag: shown C to the top, then shown A below shown B.
    browser.execute_script(DRAG, ranking_item(browser, 2), ranking_item(browser, 0), False)
    assert shown_ranking(browser) == [2, 0, 1]
    browser.execute_script(DRAG, ranking_item(browser, 0), ranking_item(browser, 1), True)
    assert shown_ranking(browser) == [2, 1, 0]
    assert browser.find_element(By.ID, "ranking-input").get_attribute("value") == "[2,1,0]"
    screenshot(browser, "annotate-ranking-dragged")

    first = workspace_assignment(browser)
    browser.find_element(By.CSS_SELECTOR, "#annotation-form button[type=submit]").click()
    wait_for_progress(browser, "1 / 2 done")
    second = wait_for_new_assignment(browser, first)
    assert same_page(browser)
    order = Assignment.objects.get(pk=first).display_order
    assert HumanAnnotation.objects.get(assignment_id=first).ranking == [order[k] for k in [2, 1, 0]]

    # Keys: Alt+ArrowDown/ArrowUp move the focused response; T ties it with the one above.
    assert shown_ranking(browser) == [0, 1, 2]
    browser.execute_script("arguments[0].focus();", ranking_item(browser, 0))
    chord(browser, Keys.ALT, Keys.ARROW_DOWN)
    assert shown_ranking(browser) == [1, 0, 2]
    chord(browser, Keys.ALT, Keys.ARROW_DOWN)
    assert shown_ranking(browser) == [1, 2, 0]
    assert focused(browser)["index"] == "0"
    keys(browser, Keys.ARROW_UP)  # plain arrows move the focus only
    assert focused(browser)["index"] == "2"
    chord(browser, Keys.ALT, Keys.ARROW_UP)
    assert shown_ranking(browser) == [2, 1, 0]
    keys(browser, Keys.ARROW_DOWN)
    assert focused(browser)["index"] == "1"
    keys(browser, "t")  # shown B tied with shown C
    assert browser.find_element(By.ID, "ranking-input").get_attribute("value") == "[[2,1],0]"
    screenshot(browser, "annotate-ranking-keys-tie")
    chord(browser, Keys.CONTROL, Keys.ENTER)
    wait_for_progress(browser, "2 / 2 done")
    assert same_page(browser)
    order = Assignment.objects.get(pk=second).display_order
    assert HumanAnnotation.objects.get(assignment_id=second).ranking == [[order[2], order[1]], order[0]]


# --- XSS ------------------------------------------------------------------------------------


def test_script_in_items_never_runs(live_server: Any, browser: Any) -> None:
    project = ProjectFactory(slug="xss", aspects=["overall"], guidelines=XSS, overlap_normal=1, ask_confidence=False)
    ItemFactory(project=project, external_id="plain", prompt="A harmless prompt.")
    ItemFactory(project=project, external_id="evil", prompt=XSS, responses=[XSS, f"**bold** {XSS}"])
    ItemFactory(
        project=project,
        external_id="evil-chat",
        prompt="",
        conversation=[{"role": "user", "content": XSS}, {"role": "assistant", "content": XSS}],
        responses=[XSS, XSS],
    )
    annotator_in(project, "alice")
    log_in(browser, live_server, "alice", f"/p/{project.slug}/annotate/")
    mark_page(browser)
    time.sleep(0.5)  # time for an image error handler to fire, were there one
    assert browser.execute_script("return typeof window.__xss;") == "undefined"

    # The evil items come in through htmx swaps, which would run inline scripts they carried.
    for expected in ["evil", "evil-chat"]:
        old = workspace_assignment(browser)
        browser.find_element(By.CSS_SELECTOR, 'input[name="pref-overall"][value="Tie"]').click()
        browser.find_element(By.CSS_SELECTOR, "#annotation-form button[type=submit]").click()
        wait_for_new_assignment(browser, old)
        assert expected in browser.find_element(By.CSS_SELECTOR, ".prompt h2").text
        time.sleep(0.5)
        assert same_page(browser)
        assert browser.execute_script("return typeof window.__xss;") == "undefined"
        browser.implicitly_wait(0)  # find_elements of nothing would wait the implicit 5 s
        assert not browser.find_elements(By.CSS_SELECTOR, "#workspace img, #workspace script, #workspace iframe")
        browser.implicitly_wait(5)
        hrefs = [a.get_attribute("href") or "" for a in browser.find_elements(By.CSS_SELECTOR, "#workspace a")]
        assert not any(h.lower().startswith("javascript:") for h in hrefs)
        screenshot(browser, f"annotate-xss-{expected}")

    # A full load of the page with the evil item on it runs nothing either.
    browser.get(browser.current_url)
    time.sleep(0.5)
    assert browser.execute_script("return typeof window.__xss;") == "undefined"
    assert "evil-chat" in browser.find_element(By.CSS_SELECTOR, ".prompt h2").text

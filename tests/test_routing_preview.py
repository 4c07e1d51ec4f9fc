"""The budget control's preview on the routing page: items, cost and the PPM's predicted score, before routing."""

from __future__ import annotations

import shutil
from decimal import Decimal

import pytest

from tests.conftest import PANDALM
from tests.factories import UserFactory
from webapp.models import Judgment, Membership, RoutingCandidate
from webapp.services.imports import import_file
from webapp.services.projects import create_project
from webapp.services.routing import (
    CURVE_SHARES,
    NO_PPM_NOTE,
    RoutingError,
    budget_curve,
    budget_preview,
    compute_features,
    make_candidates,
    route_project,
)

pytestmark = pytest.mark.django_db

AI = "gpt-3.5-turbo"


def _import(tmp_path, n: int = 60):
    path = tmp_path / "pandalm.jsonl"
    path.write_text("\n".join(PANDALM.read_text().splitlines()[:n]) + "\n")
    project = create_project(
        slug="pl", name="PandaLM", aspects=["overall"], overlap_normal=2, cost_per_human_annotation=Decimal("0.5")
    )
    import_file(project, path, fmt="pandalm")
    # What the judge's verdicts cost (imported verdicts carry none): 0.002 per item.
    Judgment.objects.filter(item__project=project, judge__name=AI, order=Judgment.COMBINED).update(
        cost=Decimal("0.002")
    )
    return project


@pytest.fixture
def labelled(db, tmp_path, client):
    project = _import(tmp_path)
    boss = UserFactory(username="boss")
    Membership.objects.create(project=project, user=boss, role=Membership.MANAGER)
    client.force_login(boss)
    return project


def _htmx(client, query: str) -> str:
    response = client.get(f"/p/pl/routing/preview?{query}", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def test_before_any_scores_the_preview_gives_the_cost_and_says_to_score_candidates_first(labelled, client):
    preview = budget_preview(labelled, 0.25, judge=AI)
    assert (preview.budget_n, preview.ai_items, preview.share) == (15, 45, 0.25)
    assert preview.human_cost == 15 * 2 * 0.5
    assert preview.ai_cost == pytest.approx(45 * 0.002)
    assert preview.total_cost == pytest.approx(15.0 + 0.09)
    assert preview.predicted_score is None
    assert preview.note == NO_PPM_NOTE == "no scored candidates yet: score candidates first"

    partial = _htmx(client, f"budget=0.25&judge={AI}")
    assert partial.lstrip().startswith('<div id="budget-preview"')
    assert "<html" not in partial
    assert "15 of 60 items to humans (0.250)" in partial
    assert '<strong id="predicted-score">no scored candidates yet: score candidates first</strong>' in partial
    assert '<strong id="human-cost">15.00</strong>' in partial
    assert "15 items \u00d7 2 annotations \u00d7 0.5000" in partial
    assert '<strong id="ai-cost">0.09</strong>' in partial
    assert '<strong id="total-cost">15.09</strong>' in partial

    # A count, and no named judge among two: the AI cost is unknown, not guessed.
    partial = _htmx(client, "budget=30")
    assert "30 of 60 items to humans (0.500)" in partial
    assert '<strong id="human-cost">30.00</strong>' in partial
    assert '<strong id="ai-cost">—</strong>' in partial
    assert budget_preview(labelled, 30).ai_cost is None

    # Five scored candidates are not enough for the model yet, and the page says so.
    for k in range(5):
        RoutingCandidate.objects.create(
            project=labelled, budget=0.5, mixture={}, score=0.5 + k / 100, score_source=RoutingCandidate.PROXY
        )
    assert budget_preview(labelled, 0.25).note == NO_PPM_NOTE + " (5 scored, the model needs 10)"


def test_the_routing_page_wires_the_budget_control_to_the_preview_with_and_without_javascript(labelled, client):
    page = client.get("/p/pl/routing/").content.decode()
    assert page.count('hx-get="/p/pl/routing/preview" hx-trigger="input changed delay:300ms"') == 2
    assert 'hx-target="#budget-preview"' in page
    assert '<form method="get" action="/p/pl/routing/preview"' in page  # the Preview button, without JS
    assert "no scored candidates yet: score candidates first" in page  # the default budget's preview

    whole = client.get("/p/pl/routing/preview?budget=0.5&judge=" + AI)
    assert whole.status_code == 200
    text = whole.content.decode()
    assert "<html" in text
    assert "30 of 60 items to humans (0.500)" in text
    assert 'name="budget" value="0.5"' in text  # the route form keeps the previewed budget
    for bad, message in (("lots", "must be numbers"), ("0", "budget: a budget share must be in (0, 1]")):
        response = client.get(f"/p/pl/routing/preview?budget={bad}")
        assert response.status_code == 400
        assert message in response.content.decode()
        assert message in _htmx(client, f"budget={bad}")


@pytest.mark.slow
def test_the_predicted_score_is_what_ppm_simulated_routing_then_predicts(labelled, client):
    compute_features(labelled)
    for k, candidate in enumerate(make_candidates(labelled, n=12, budget=0.25, seed=0)):
        candidate.score, candidate.score_source = 0.5 + 0.01 * k, RoutingCandidate.EXTERNAL
        candidate.save()
    preview = budget_preview(labelled, 0.25, judge=AI, seed=3, n_candidates=64)
    assert preview.predicted_score is not None
    assert (preview.ppm_rows, preview.ppm_source, preview.note) == (12, RoutingCandidate.EXTERNAL, "")

    partial = _htmx(client, f"budget=0.25&judge={AI}&seed=3&candidates=64")
    assert f'<strong id="predicted-score">{preview.predicted_score:.4f}</strong>' in partial
    assert f"({preview.ppm_model} model on 12 external-scored candidates" in partial
    assert f'<strong id="total-cost">{preview.total_cost:.2f}</strong>' in partial

    run = route_project(labelled, strategy="ppm-simulated", budget=0.25, seed=3, n_candidates=64, judge=AI)
    assert run.summary["predicted"] == pytest.approx(preview.predicted_score)
    assert run.summary["predicted_score"] == pytest.approx(preview.predicted_score)
    assert run.summary["human_cost"] == preview.human_cost
    assert run.summary["ai_cost"] == pytest.approx(preview.ai_cost)

    other = budget_preview(labelled, 0.5, judge=AI, seed=3, n_candidates=64)
    assert other.budget_n == 30
    assert f'<strong id="predicted-score">{other.predicted_score:.4f}</strong>' in _htmx(
        client, f"budget=0.5&judge={AI}&seed=3&candidates=64"
    )
    with pytest.raises(RoutingError, match="candidates: must be at least 1"):
        budget_preview(labelled, 0.5, n_candidates=0)


@pytest.mark.skipif(shutil.which("chromedriver") is None, reason="make test installs chromium-driver")
@pytest.mark.django_db(transaction=True)
def test_in_a_browser_the_preview_follows_the_budget_control_without_a_page_load(live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    project = _import(tmp_path)
    boss = UserFactory(username="boss")
    boss.set_password("pw-for-the-browser")
    boss.save()
    Membership.objects.create(project=project, user=boss, role=Membership.MANAGER)
    browser.get(live_server.url + "/login/")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("pw-for-the-browser")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The login's redirect must land before the next page is asked for (a busy machine is slow to).
    WebDriverWait(browser, 30).until(lambda b: "/login/" not in b.current_url)
    browser.get(live_server.url + "/p/pl/routing/")
    preview = (By.ID, "budget-preview")
    WebDriverWait(browser, 30).until(ec.presence_of_element_located(preview))
    assert "15 of 60 items to humans" in browser.find_element(*preview).text
    marker = browser.execute_script("window.__stay = 1; return window.__stay;")

    budget = browser.find_element(By.CSS_SELECTOR, "#route-form input[name=budget]")
    budget.clear()
    budget.send_keys("30")
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element(preview, "30 of 60 items to humans"))
    assert "human 30.00" in browser.find_element(*preview).text

    # The slider: one step up from 0.25 copies 0.3 into the budget field and previews it.
    slider = browser.find_element(By.NAME, "budget_share")
    browser.execute_script("arguments[0].value = '0.25';", slider)
    slider.send_keys(Keys.ARROW_RIGHT)
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element(preview, "18 of 60 items to humans"))
    assert budget.get_attribute("value") == "0.3"
    Select(browser.find_element(By.CSS_SELECTOR, "#route-form select[name=judge]")).select_by_value(AI)
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element(preview, "AI 0.08"))
    assert "no scored candidates yet: score candidates first" in browser.find_element(*preview).text
    assert browser.execute_script("return window.__stay;") == marker


@pytest.mark.slow
def test_the_curve_beside_the_budget_control_is_the_preview_of_each_share(labelled, client):
    compute_features(labelled)
    for k, candidate in enumerate(make_candidates(labelled, n=12, budget=0.25, seed=0)):
        candidate.score, candidate.score_source = 0.5 + 0.01 * k, RoutingCandidate.EXTERNAL
        candidate.save()
    # Each point is the preview of its share (256 candidates), drawn in SVG and listed in a table.
    points, why = budget_curve(labelled, judge=AI, seed=3)
    assert why == ""
    assert [p.share for p in points] == list(CURVE_SHARES)
    quarter = next(p for p in points if p.share == 0.25)
    expected = budget_preview(labelled, 0.25, judge=AI, seed=3, n_candidates=256)
    assert (quarter.budget_n, quarter.predicted_score) == (15, pytest.approx(expected.predicted_score))
    assert quarter.total_cost == pytest.approx(expected.total_cost)
    curve = client.get(f"/p/pl/routing/curve?judge={AI}&seed=3", HTTP_HX_REQUEST="true").content.decode()
    assert curve.lstrip().startswith('<div id="budget-curve"')
    assert "<svg" in curve
    assert curve.count("<circle") == len(CURVE_SHARES)
    assert f'<td class="num">{expected.predicted_score:.4f}</td>' in curve
    assert "http" not in curve.split("<svg", 1)[1].split("</svg>", 1)[0]  # nothing fetched from anywhere
    assert "<html" in client.get(f"/p/pl/routing/curve?judge={AI}&seed=3").content.decode()  # without JS


def test_without_a_model_the_curve_says_to_score_candidates_first(labelled, client):
    assert budget_curve(labelled) == ([], NO_PPM_NOTE)
    page = client.get("/p/pl/routing/").content.decode()
    assert 'hx-get="/p/pl/routing/curve" hx-trigger="load"' in page
    assert '<a href="/p/pl/routing/curve">Predicted score by budget</a>' in page
    partial = client.get("/p/pl/routing/curve", HTTP_HX_REQUEST="true").content.decode()
    assert f"Predicted score by budget: {NO_PPM_NOTE}" in partial
    assert "hx-trigger" not in partial  # loaded once, not again

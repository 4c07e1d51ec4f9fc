"""The Quality, Progress and Costs pages: who may see them, and that their numbers are the selectors' and
the pure functions' (on a small project whose every figure is worked out by hand below)."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.template.defaultfilters import floatformat
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp import agreement as ag
from webapp import selectors_quality as sq
from webapp.models import Assignment, HumanAnnotation, Item, Judge, Judgment, Membership

pytestmark = pytest.mark.django_db

A2, A1, TIE, B1, B2 = (
    "A-is-clearly-better",
    "A-is-slightly-better",
    "Tie",
    "B-is-slightly-better",
    "B-is-clearly-better",
)
STEPS = {A2: 2, A1: 1, TIE: 0, B1: -1, B2: -2}
SCALE = [-2, -1, 0, 1, 2]

# Overall labels per item (1..6) and rater, with active seconds. "ext" is an imported annotator.
HUMANS = {
    1: {"alice": (A2, 10), "bob": (A1, 5), "carol": (TIE, 12)},
    2: {"alice": (B2, 20), "bob": (B2, 15)},
    3: {"alice": (A1, 30), "bob": (B1, 25), "carol": (A2, 14)},
    4: {"alice": (TIE, 40), "ext": (TIE, None)},
    5: {"bob": (A2, 35)},
    6: {},
}
# Judges: per-order labels ("0-1" A shown first, "1-0" swapped; canonical order) and the combined verdict.
GPT = {
    1: (A1, A2, A1),
    2: (A1, B1, TIE),
    3: (A2, A2, A2),
    4: (TIE, TIE, TIE),
    5: (B2, B2, B2),
    6: (A2, A1, A1),
}
LLAMA = {1: (A2, False), 2: (B1, False), 3: (B2, True), 4: (A1, False)}  # combined only, order flag
STATUS = {1: Item.COMPLETE, 2: Item.IN_PROGRESS, 3: Item.COMPLETE, 4: Item.IN_PROGRESS, 5: Item.IN_PROGRESS}
LEXICAL = ("bertscore", "bertscore_length", "cosine_sim", "rouge", "entity_sim")
LENGTHS = ("token_len_diff", "prompt_len", "len_shorter", "len_longer")


@pytest.fixture
def data(project):
    project.aspects = ["overall", "helpful"]
    project.overlap_normal = 3
    project.cost_per_human_annotation = Decimal("0.5")
    project.save()
    items = {}
    for k in range(1, 7):
        features = {
            "lexical": {**{f: 0.1 * k + 0.05 for f in LEXICAL}, **{f: float(k) for f in LENGTHS}},
            **({"tags": {"subject_of_expertise": ["Biology"]}} if k in (1, 2) else {}),
        }
        items[k] = ItemFactory(
            project=project,
            external_id=f"q-{k}",
            prompt="x" * (10 * k),
            metadata={"category": "math" if k <= 3 else "writing"},
            features=features,
            status=STATUS.get(k, Item.PENDING),
        )
    users = {name: UserFactory(username=name) for name in ("alice", "bob", "carol", "dave", "erin")}
    now = timezone.now()
    for k, labels in HUMANS.items():
        for name, (label, seconds) in labels.items():
            preferences = {"overall": label}
            if k in (1, 2) and name in ("alice", "bob"):
                preferences["helpful"] = label
            if name == "ext":
                HumanAnnotation.objects.create(
                    item=items[k], external_annotator="mturk-7", preferences=preferences, imported=True
                )
                continue
            assignment = Assignment.objects.create(
                item=items[k],
                annotator=users[name],
                display_order=[0, 1],
                lease_expires_at=now,
                status=Assignment.SUBMITTED,
            )
            HumanAnnotation.objects.create(
                item=items[k],
                annotator=users[name],
                assignment=assignment,
                preferences=preferences,
                time_spent=seconds,
            )
    # Two of alice's annotations were made two days ago.
    HumanAnnotation.objects.filter(annotator=users["alice"], item__in=[items[1], items[2]]).update(
        created_at=now - timedelta(days=2)
    )
    later, earlier = now + timedelta(minutes=30), now - timedelta(minutes=5)
    Assignment.objects.create(item=items[5], annotator=users["carol"], display_order=[1, 0], lease_expires_at=later)
    Assignment.objects.create(item=items[6], annotator=users["dave"], display_order=[0, 1], lease_expires_at=earlier)
    Assignment.objects.create(
        item=items[5], annotator=users["dave"], display_order=[0, 1], lease_expires_at=earlier, status="expired"
    )
    Assignment.objects.create(
        item=items[6], annotator=users["erin"], display_order=[0, 1], lease_expires_at=later, status="skipped"
    )
    gpt = Judge.objects.create(name="gpt", backend=Judge.OPENAI, model="gpt-4o")
    llama = Judge.objects.create(name="llama", backend=Judge.GENERATIVE, model="llama")
    for k, (first, swapped, combined) in GPT.items():
        for order, label in (("0-1", first), ("1-0", swapped)):
            Judgment.objects.create(
                item=items[k],
                judge=gpt,
                order=order,
                prompt_version="v1",
                labels={"overall": label},
                status=Judgment.DONE,
                cost=Decimal("0.001"),
                prompt_tokens=100,
                completion_tokens=10,
            )
        Judgment.objects.create(
            item=items[k],
            judge=gpt,
            order=Judgment.COMBINED,
            prompt_version="v1",
            labels={"overall": combined},
            status=Judgment.DONE,
            cost=Decimal("0.002"),
            prompt_tokens=200,
            completion_tokens=20,
            order_inconsistent=first != swapped and STEPS[first] * STEPS[swapped] <= 0,
        )
    for k, (label, flag) in LLAMA.items():
        Judgment.objects.create(
            item=items[k],
            judge=llama,
            order=Judgment.COMBINED,
            prompt_version="v1",
            labels={"overall": label},
            status=Judgment.DONE,
            order_inconsistent=flag,
        )
    return {"project": project, "items": items, "users": users, "gpt": gpt, "llama": llama}


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _fmt(value: float, places: int = 3) -> str:
    return floatformat(value, places)


def _row(html: str, element_id: str) -> str:
    match = re.search(rf'<tr id="{re.escape(element_id)}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, element_id
    return match.group(1)


def _overall_units(items=range(1, 7)) -> list[list[int]]:
    return [[STEPS[label] for label, _ in HUMANS[k].values()] for k in items if HUMANS[k]]


PAGES = ("quality", "progress", "costs")


# --- who may see the pages ------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_visitors_are_sent_to_log_in(client, project, page):
    response = client.get(f"/p/{project.slug}/{page}/")
    assert response.status_code == 302
    assert response.url.startswith("/login/?next=")


@pytest.mark.parametrize("page", PAGES)
def test_permission_matrix(project, manager, annotator, page):
    other_manager = UserFactory(username="elsewhere")
    MembershipFactory(project=ProjectFactory(slug="other"), user=other_manager, role=Membership.MANAGER)
    admin = UserFactory(username="root", is_superuser=True, is_staff=True)
    url = f"/p/{project.slug}/{page}/"
    assert _client(annotator).get(url).status_code == 403
    assert _client(other_manager).get(url).status_code == 403
    assert _client(manager).get(url).status_code == 200
    assert _client(admin).get(url).status_code == 200
    assert _client(manager).get(f"/p/no-such-project/{page}/").status_code == 404
    assert _client(manager).post(url).status_code == 405


def test_the_project_page_links_to_the_three_pages(manager, project):
    page = _client(manager).get(f"/p/{project.slug}/").content.decode()
    for name in PAGES:
        assert f'href="/p/{project.slug}/{name}/"' in page


@pytest.mark.parametrize("page", PAGES)
def test_an_empty_project_renders(manager, project, page):
    response = _client(manager).get(f"/p/{project.slug}/{page}/")
    assert response.status_code == 200


# --- quality ----------------------------------------------------------------------------------------


def test_quality_report_reads_the_labels_as_worked_out_by_hand(data):
    report = sq.quality_report(data["project"])
    humans = report.humans_by_aspect["overall"]
    units = _overall_units()
    winners = [[(s > 0) - (s < 0) for s in u] for u in units]
    assert humans.labels == 11
    assert humans.units == 4
    assert humans.alpha == pytest.approx(ag.krippendorff_alpha(units, ag.ORDINAL, SCALE))
    assert humans.fleiss == pytest.approx(ag.fleiss_kappa(winners))
    assert humans.percent == pytest.approx((1 / 3 + 1 + 1 / 3 + 1) / 4)
    # Human-AI: gpt agrees with the human majority on items 1, 3, 4 of 1..5 (item 6 has no humans).
    gpt, llama = data["gpt"].pk, data["llama"].pk
    assert report.human_ai[gpt]["overall"].n == 5
    assert report.human_ai[gpt]["overall"].percent == pytest.approx(3 / 5)
    assert report.human_ai[gpt]["overall"].kappa == pytest.approx(ag.cohen_kappa([1, 0, 1, 0, -1], [1, -1, 1, 0, 1]))
    assert report.human_ai[llama]["overall"].percent == pytest.approx(2 / 4)
    assert report.ai_ai[(gpt, llama)]["overall"].percent == pytest.approx(1 / 4)
    # Position consistency: gpt's orders disagree on item 2 only; llama has its flag (item 3).
    consistency = {c.judge: c for c in report.consistency}
    assert consistency[gpt].source == "orders"
    assert consistency[gpt].overall.percent == pytest.approx(5 / 6)
    assert consistency[gpt].per_aspect["overall"].n == 6
    assert consistency[llama].source == "flag"
    assert consistency[llama].overall.percent == pytest.approx(3 / 4)
    # Leave-one-out consensus (see test_agreement for the rule).
    annotators = {a.name: a for a in report.annotators}
    assert annotators["alice"].annotations == 4
    assert annotators["alice"].consensus == ag.ConsensusAgreement(4, 2, 2)
    assert annotators["bob"].consensus == ag.ConsensusAgreement(4, 2, 1)
    assert annotators["carol"].consensus == ag.ConsensusAgreement(2, 1, 0)
    assert annotators["mturk-7"].consensus == ag.ConsensusAgreement(1, 1, 1)
    # The helpful aspect: alice and bob on items 1 and 2 only.
    assert report.humans_by_aspect["helpful"].units == 2


def test_the_numpy_path_equals_the_pure_python_path(data):
    """LabelArrays (slices, every aspect's summary) and human_agreement (lists) give the same numbers."""
    report = sq.quality_report(data["project"])
    units = {k: {name: STEPS[label] for name, (label, _) in HUMANS[k].items()} for k in HUMANS if HUMANS[k]}
    by_lists = sq.human_agreement(units, "likert5")
    by_arrays = report.humans_by_aspect["overall"]
    for name in ("labels", "units", "percent", "fleiss", "alpha", "cohen", "weighted", "n_pairs"):
        assert getattr(by_arrays, name) == pytest.approx(getattr(by_lists, name)), name


def test_quality_slices(data):
    report = sq.quality_report(data["project"])
    slices = {row.slice.name: row for row in report.slices}
    math = slices["category=math"]
    assert math.items == 3
    assert math.humans.alpha == pytest.approx(ag.krippendorff_alpha(_overall_units([1, 2, 3]), ag.ORDINAL, SCALE))
    assert math.judges[data["gpt"].pk].percent == pytest.approx(2 / 3)
    assert slices["category=writing"].items == 3
    assert slices["subject=Biology"].items == 2
    # Lexical bins: similarities k/10 + .05 -> items 1, 2 low ([0, .33]), 3..6 mid; lengths as percentiles.
    assert slices["cosine_sim=low"].items == 2
    assert slices["cosine_sim=mid"].items == 4
    assert "cosine_sim=high" not in slices
    assert {name for name in slices if name.startswith("prompt length=")} == {
        "prompt length=low",
        "prompt length=mid",
        "prompt length=high",
    }


def test_bins_are_routings_binarize():
    import random

    from routing.features import BINS, LENGTH_FEATURES, LEXICAL_FEATURES, binarize

    rng = random.Random(3)
    raw = [{f: rng.choice([rng.random(), 0.33, 0.67, 1.4, -0.2, float(rng.randint(0, 9))]) for f in LEXICAL_FEATURES}]
    raw += [{f: rng.random() * (50 if f in LENGTH_FEATURES else 1) for f in LEXICAL_FEATURES} for _ in range(200)]
    names, matrix = binarize(raw)
    for feature in LEXICAL_FEATURES:
        ours = sq.bins([r[feature] for r in raw], as_percentiles=feature in LENGTH_FEATURES)
        for k, name in enumerate(BINS):
            assert (matrix[:, names.index(f"{feature}={name}")] == (ours == k)).all(), (feature, name)


def test_item_slices_without_lexical_features_bin_the_prompt_characters():
    rows = [sq.ItemRow(k, None, None, None, "Law" if k < 3 else None, None, 10 * k) for k in range(1, 7)]
    rows.append(sq.ItemRow(7, None, None, ["Poetry", "Law"], None, None, 0))  # no prompt: no length slice
    slices = {s.name: s for s in sq.item_slices(rows)}
    assert slices["subject=Law"].item_ids == {1, 2}
    assert slices["category=Law"].item_ids == {7}
    assert slices["prompt length=low"].item_ids == {1}  # percentiles 1/6 .. 6/6; low is [0, .33]
    assert slices["prompt length=mid"].item_ids == {2, 3, 4}
    assert slices["prompt length=high"].item_ids == {5, 6}


def test_quality_page_shows_the_reports_numbers(data, manager):
    project = data["project"]
    report = sq.quality_report(project)
    page = _client(manager).get(f"/p/{project.slug}/quality/").content.decode()
    humans = _row(page, "humans-overall")
    for value in (report.humans_by_aspect["overall"].alpha, report.humans_by_aspect["overall"].fleiss):
        assert _fmt(value) in humans
    assert _fmt(report.humans_by_aspect["overall"].cohen) in humans
    assert f"5 · {_fmt(0.6)} · κ {_fmt(report.human_ai[data['gpt'].pk]['overall'].kappa)}" in page
    assert f"6 · {_fmt(5 / 6)}" in page  # gpt's position consistency
    assert "category = math" in page
    assert "mturk-7" in page
    # Another aspect by a real link.
    assert 'href="?aspect=helpful"' in page
    helpful = _client(manager).get(f"/p/{project.slug}/quality/?aspect=helpful").content.decode()
    assert "By slice: helpful" in helpful
    assert "By slice: overall" in _client(manager).get(f"/p/{project.slug}/quality/?aspect=nope").content.decode()


def test_quality_report_takes_a_bounded_number_of_queries(data):
    project = data["project"]
    with CaptureQueriesContext(connection) as small:
        sq.quality_report(project)
    for k in range(10):
        item = ItemFactory(project=project, features={"tags": {"subject_of_expertise": [f"S{k}"]}})
        for name in ("alice", "bob"):
            HumanAnnotation.objects.create(item=item, annotator=data["users"][name], preferences={"overall": A1})
        Judgment.objects.create(
            item=item, judge=data["gpt"], order="0-1", prompt_version="v1", labels={"overall": B1}, status="done"
        )
    with CaptureQueriesContext(connection) as bigger:
        sq.quality_report(project)
    assert len(small) == len(bigger) <= 8


# --- progress ---------------------------------------------------------------------------------------


def test_progress_summary(data):
    summary = sq.progress_summary(data["project"])
    assert summary.items == 6
    assert summary.by_status == {"pending": 1, "in_progress": 3, "complete": 2, "skipped": 0}
    assert summary.annotations == 11
    assert summary.imported == 1
    assert (summary.leases_live, summary.leases_expired, summary.skipped) == (1, 2, 1)
    assert (summary.last_hour, summary.last_day) == (8, 8)  # imports and alice's two old ones left out
    assert summary.median_seconds == pytest.approx(17.5)
    people = {a.name: a for a in summary.annotators}
    assert (people["alice"].done, people["alice"].median_seconds, people["alice"].last_day) == (4, 25.0, 2)
    assert (people["carol"].done, people["carol"].in_progress) == (2, 1)
    assert (people["dave"].done, people["dave"].expired, people["dave"].tier) == (0, 2, "—")
    assert people["erin"].skipped == 1
    assert people["bob"].consensus == ag.ConsensusAgreement(4, 2, 1)
    assert people["mturk-7"].done == 1
    # Cumulative: two annotations two days ago, then all eleven.
    assert [n for _, n in summary.timeline] == [2, 11]


def test_progress_page_and_its_htmx_partial(data, manager):
    project = data["project"]
    client = _client(manager)
    page = client.get(f"/p/{project.slug}/progress/").content.decode()
    assert "<h1>Progress</h1>" in page
    assert 'hx-trigger="every 5s"' in page
    assert '<span id="annotations">11</span>' in page
    assert '<span id="leases-expired">2</span>' in page
    assert '<td id="median-time">17.5 s</td>' in page
    assert "0.500" in _row(page, f"annotator-u{data['users']['bob'].pk}")
    partial = client.get(f"/p/{project.slug}/progress/", headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<div id="live"')
    assert 'hx-get="/p/prefs/progress/"' in partial
    assert 'hx-trigger="every 5s"' in partial
    assert "<h1>" not in partial
    assert "<html" not in partial
    assert '<span id="last-hour">8</span>' in partial
    assert "<svg" in partial


# --- costs ------------------------------------------------------------------------------------------


def test_cost_summary(data):
    costs = sq.cost_summary(data["project"])
    normal = costs.humans[0]
    assert (normal.tier, normal.annotations, normal.spent) == ("normal", 11, Decimal("5.5"))
    # Queue items not complete: 2 (2 labels), 4 (2), 5 (1), 6 (0) with overlap 3: 1 + 1 + 2 + 3 slots.
    assert normal.remaining_slots == 7
    assert normal.remaining_cost == Decimal("3.5")
    judges = {j.name: j for j in costs.judges}
    gpt = judges["gpt"]
    assert (gpt.calls, gpt.verdicts, gpt.spent) == (12, 6, Decimal("0.012"))
    assert (gpt.prompt_tokens, gpt.completion_tokens) == (1200, 120)
    assert gpt.per_item == Decimal("0.002")
    assert gpt.remaining_items == 0
    assert judges["llama"].spent is None
    assert judges["llama"].remaining_items == 2
    assert costs.ai_items == 6
    assert costs.ai_spent == Decimal("0.012")
    assert costs.spent == Decimal("5.512")
    assert costs.at_finish == Decimal("9.012")


def test_costs_after_routing_project_the_ai_items(data):
    project = data["project"]
    items = data["items"]
    Item.objects.filter(pk__in=[items[k].pk for k in (1, 2, 3)]).update(route=Item.HUMAN)
    Item.objects.filter(pk__in=[items[k].pk for k in (4, 5, 6)]).update(route=Item.AI)
    Judgment.objects.filter(item=items[6], judge=data["gpt"]).delete()
    costs = sq.cost_summary(project)
    gpt = {j.name: j for j in costs.judges}["gpt"]
    assert costs.ai_items == 3
    assert gpt.remaining_items == 1  # item 6 lost its verdict
    assert gpt.per_item == Decimal("0.010") / 5
    assert costs.ai_remaining == gpt.per_item
    # The human queue is now the human-routed items 1..3: only item 2 is short (one slot).
    assert costs.humans[0].remaining_slots == 1


@override_settings(HYBRIDPREF_EXPERT_COST_PER_ANNOTATION="2.25")
def test_the_expert_cost_comes_from_the_settings_when_named(data, manager):
    project = data["project"]
    project.overlap_expert = 1
    project.save()
    costs = sq.cost_summary(project)
    expert = costs.humans[1]
    assert (expert.cost_per_annotation, expert.cost_source) == (Decimal("2.25"), "settings")
    assert expert.remaining_slots == 4  # one expert label for each item that is not complete (2, 4, 5, 6)
    assert expert.remaining_cost == Decimal("9.00")
    page = _client(manager).get(f"/p/{project.slug}/costs/").content.decode()
    assert "settings.HYBRIDPREF_EXPERT_COST_PER_ANNOTATION" in page


def test_costs_page_shows_the_summary(data, manager):
    project = data["project"]
    page = _client(manager).get(f"/p/{project.slug}/costs/").content.decode()
    assert '<td class="num">5.50</td>' in _row(page, "human-total")
    assert "3.50" in _row(page, "human-total")
    assert "0.0120" in _row(page, f"judge-{data['gpt'].pk}")
    assert "9.01" in _row(page, "total")
    assert "no cost recorded" in page


# --- charts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("page", "at_least"), [("quality", 4), ("progress", 1), ("costs", 1)])
def test_pages_draw_inline_svg_with_nothing_external(data, manager, page, at_least):
    html = _client(manager).get(f"/p/{data['project'].slug}/{page}/").content.decode()
    charts = re.findall(r"<svg\b.*?</svg>", html, re.S)
    assert len(charts) >= at_least
    for svg in charts:
        lowered = svg.lower()
        for banned in ("http:", "https:", "//", "href", "<script", "<image", "<use", "url(", "<foreignobject"):
            assert banned not in lowered, banned
        assert "<rect" in svg or "<polyline" in svg


def test_bar_chart_geometry():
    from webapp.views_quality import LABEL_W, PLOT_W, bar_chart

    chart = bar_chart("t", [("a", [0.5, None]), ("b", [1.2, 0.0])], ["x", "y"])
    first, second = chart.rows
    assert first.bars[0].width == PLOT_W / 2
    assert first.bars[0].x == LABEL_W
    assert len(first.bars) == 1
    assert first.value_text == "50% / —"
    assert second.bars[0].width == PLOT_W  # clipped
    assert second.bars[1].width == 0
    assert chart.ticks[0] == (LABEL_W, "0%")
    assert chart.ticks[-1] == (LABEL_W + PLOT_W, "100%")


def test_line_chart_geometry():
    from datetime import UTC, datetime

    from webapp.views_quality import line_chart

    assert line_chart("t", []) is None
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    chart = line_chart("t", [(t0, 2), (t0 + timedelta(hours=2), 10)], width=216, height=128)
    assert chart is not None
    # left 56, right 200, top 12, bottom 100; y = 100 - 88 n / 10.
    assert chart.points == "56.0,100.0 56.0,100.0 56.0,82.4 200.0,82.4 200.0,12.0"
    assert chart.last == 10


def test_strength7_labels_are_read_as_steps(project):
    """HelpSteer2's -3..+3 (negative: A better) read through the database as text; junk is left out."""
    project.scale = "strength7"
    project.aspects = ["overall"]
    project.save()
    item = ItemFactory(project=project)
    for name, label in (("p", -3), ("q", -2), ("r", True)):
        HumanAnnotation.objects.create(item=item, annotator=UserFactory(username=name), preferences={"overall": label})
    data = sq.read_labels(project)
    assert sorted(data.humans["overall"][item.pk].values()) == [2, 3]  # A better: positive steps
    assert sq.label_steps("strength7")["-3"] == 3
    assert sq.label_steps("likert5")["B-is-clearly-better"] == -2


def test_progress_and_costs_take_a_bounded_number_of_queries(data):
    project = data["project"]
    cache.delete(sq.consensus_cache_key(project, "overall"))
    with CaptureQueriesContext(connection) as progress:
        sq.progress_summary(project)
    with CaptureQueriesContext(connection) as cached:
        sq.progress_summary(project)
    with CaptureQueriesContext(connection) as costs:
        sq.cost_summary(project)
    assert (len(progress), len(cached), len(costs)) == (6, 5, 7)

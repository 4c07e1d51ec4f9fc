"""How long the Quality, Progress and Costs pages take on a large synthetic project (docs/quality.md).

Skipped unless HP_QUALITY_SCALE is set (it inserts some 300,000 rows): HP_QUALITY_SCALE=1 measures
50,000 items x 2 annotations (100,000 annotations), one judge with both orders and the combined verdict
(150,000 judgments); HP_QUALITY_SCALE=0.1 a tenth of it.
"""

from __future__ import annotations

import os
import random
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from webapp import selectors_quality as sq
from webapp.models import HumanAnnotation, Item, Judge, Judgment, Membership
from webapp.scheme import LIKERT5_LABELS

SCALE = float(os.environ.get("HP_QUALITY_SCALE", "0") or 0)
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.slow,
    pytest.mark.skipif(not SCALE, reason="set HP_QUALITY_SCALE=1 to measure on 100,000 annotations"),
]
SUBJECTS = ("Biology", "History", "Law", "Physics", "Computer sciences", "Education")
FEATURES = ("bertscore", "bertscore_length", "cosine_sim", "rouge", "entity_sim")
LENGTHS = ("token_len_diff", "prompt_len", "len_shorter", "len_longer")


def _label(rng: random.Random, base: int) -> str:
    """A likert5 label near `base` (an index into LIKERT5_LABELS): annotators agree about 60% of the time."""
    return LIKERT5_LABELS[min(4, max(0, base + rng.choice((0, 0, 0, -1, 1))))]


def test_pages_on_a_large_project(capsys):
    rng = random.Random(7)
    n_items = int(50_000 * SCALE)
    project = ProjectFactory(
        slug="big", aspects=["overall"], overlap_normal=2, cost_per_human_annotation=Decimal("0.4")
    )
    manager = UserFactory(username="boss")
    MembershipFactory(project=project, user=manager, role=Membership.MANAGER)
    annotators = [UserFactory(username=f"w{k}") for k in range(40)]
    started = time.perf_counter()
    items = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=f"i{k}",
                prompt="p" * rng.randint(20, 2000),
                metadata={"category": rng.choice(("chat", "code", "math", "safety"))},
                features={
                    "lexical": {**{f: rng.random() for f in FEATURES}, **{f: rng.randint(1, 500) for f in LENGTHS}},
                    **({"tags": {"subject_of_expertise": [rng.choice(SUBJECTS)]}} if k % 2 else {}),
                },
                status=Item.COMPLETE,
            )
            for k in range(n_items)
        ],
        batch_size=5000,
    )
    truth = {item.pk: rng.randint(0, 4) for item in items}
    annotations = []
    for item in items:
        for user in rng.sample(annotators, 2):
            label = _label(rng, truth[item.pk])
            annotations.append(
                HumanAnnotation(
                    item=item, annotator=user, preferences={"overall": label}, time_spent=rng.uniform(20, 300)
                )
            )
    HumanAnnotation.objects.bulk_create(annotations, batch_size=5000)
    judge = Judge.objects.create(name="gpt", backend=Judge.OPENAI, model="gpt-4o")
    judgments = []
    for item in items:
        first, swapped = _label(rng, truth[item.pk]), _label(rng, truth[item.pk])
        for order, label in (("0-1", first), ("1-0", swapped), (Judgment.COMBINED, first)):
            judgments.append(
                Judgment(
                    item=item,
                    judge=judge,
                    order=order,
                    prompt_version="v1",
                    labels={"overall": label},
                    status=Judgment.DONE,
                    cost=Decimal("0.0004"),
                )
            )
    Judgment.objects.bulk_create(judgments, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    built = time.perf_counter() - started

    if os.environ.get("HP_QUALITY_PROFILE"):
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(sq.quality_report, project)
        with capsys.disabled():
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    timings = {}
    with CaptureQueriesContext(connection) as queries:
        t = time.perf_counter()
        report = sq.quality_report(project)
        timings["quality_report"] = time.perf_counter() - t
    timings["quality_queries"] = len(queries)
    t = time.perf_counter()
    summary = sq.progress_summary(project)
    timings["progress_summary (consensus computed)"] = time.perf_counter() - t
    t = time.perf_counter()
    costs = sq.cost_summary(project)
    timings["cost_summary"] = time.perf_counter() - t
    client = Client()
    client.force_login(manager)
    for page in ("quality", "progress", "costs"):
        t = time.perf_counter()
        assert client.get(f"/p/{project.slug}/{page}/").status_code == 200
        timings[f"GET /{page}/"] = time.perf_counter() - t
    t = time.perf_counter()
    client.get(f"/p/{project.slug}/progress/", headers={"HX-Request": "true"})
    timings["GET /progress/ (htmx partial)"] = time.perf_counter() - t

    assert report.n_annotations == 2 * n_items
    assert summary.annotations == 2 * n_items
    assert costs.humans[0].annotations == 2 * n_items
    with capsys.disabled():
        print(f"\n{n_items} items, {2 * n_items} annotations, {3 * n_items} judgments (built in {built:.0f} s)")
        for name, value in timings.items():
            print(f"  {name}: {value:.2f}" + ("" if name.endswith("queries") else " s"))
        print(f"  human alpha {report.humans_by_aspect['overall'].alpha:.3f}, {len(report.slices)} slices")

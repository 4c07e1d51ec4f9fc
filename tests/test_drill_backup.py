"""Failure drill: backups, restored.

1. The database as a whole: `pg_dump -Fc` of the test database, `pg_restore` into a new scratch database,
   then the same row count in every table and the same checksum of the annotations and judgments.
2. One project: `manage.py export_project` (webapp/services/archive.py) and `manage.py import_project` into an
   empty instance (a scratch database made with `migrate`), whose own export is then the same, file for
   file; and into this instance under another slug.
See docs/operations.md, "Failure drills" and "Backups".
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tarfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from tests.drill_support import database_url, manage, needs_pg_dump, process_env, psql
from tests.factories import ItemFactory, MembershipFactory, UserFactory
from tests.fake_openai import FakeOpenAI
from webapp.models import (
    AnnotatorProfile,
    Assignment,
    ExportSnapshot,
    GoldItem,
    HumanAnnotation,
    Item,
    JudgeRun,
    Judgment,
    Membership,
    Project,
    RoutingCandidate,
    RoutingRun,
)
from webapp.services import archive, judging
from webapp.services.annotations import edit_annotation, submit_annotation
from webapp.services.exports import export_now
from webapp.services.projects import create_project
from webapp.services.queue import claim_next

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SLUG = "drill-backup"


def _answer(k: int) -> dict[str, Any]:
    labels = ["A-is-clearly-better", "A-is-slightly-better", "Tie", "B-is-slightly-better"]
    return {
        "preferences": {"overall": labels[k % 4], "helpful": labels[(k + 1) % 4]},
        "reasons": {"overall": ["clearer"]} if k % 2 else {},
        "ratings": {0: {"helpfulness": 3}, 1: {"helpfulness": k % 5}},
        "confidence": {"overall": "fairly-confident"},
        "justification": f"Drill answer number {k}, with a reason.",
        "time_spent": 10.5 + k,
    }


def populate(tmp_path: Path, settings: Any) -> Project:
    """A project with a bit of everything a project holds, committed (other processes read it)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EXPORT_DIR = tmp_path / "exports"
    project = create_project(
        slug=SLUG,
        name="Backup drill",
        aspects=["overall", "helpful"],
        reasons={"overall": ["clearer", "more accurate"]},
        rating_attributes=["helpfulness"],
        guidelines="Prefer **helpful** answers.",
        overlap_normal=2,
        overlap_expert=1,
        cost_per_human_annotation="0.25",
    )
    items = [
        ItemFactory(
            project=project,
            external_id=f"b-{k}",
            prompt=f"Question {k}: ünïcode and 'quotes'?",
            metadata={"category": ["math", "code"][k % 2], "k": k},
            responses=["Short.", f"A much longer answer, number {k}."],
        )
        for k in range(10)
    ]
    ItemFactory(
        project=project,
        external_id="b-chat",
        prompt="",
        conversation=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        responses=["One.", "Two, longer."],
    )
    manager = UserFactory(username="backup-manager", email="m@example.org", first_name="Mia")
    MembershipFactory(project=project, user=manager, role=Membership.MANAGER)
    people = []
    for k in range(3):
        user = UserFactory(username=f"backup-annotator-{k}")
        AnnotatorProfile.objects.create(user=user, tier="expert" if k == 2 else "normal", domains=["math"])
        MembershipFactory(project=project, user=user, quota=5 if k == 0 else None)
        people.append(user)
    n = 0
    for user in people:
        for _ in range(4):
            assignment = claim_next(project, user)
            if assignment is None:
                break
            submit_annotation(assignment.pk, user, _answer(n), project=project)
            n += 1
    # A skipped item, an open lease, an edit with its revision, an imported annotation from a dataset.
    skipped = claim_next(project, people[0])
    Assignment.objects.filter(pk=skipped.pk).update(status=Assignment.SKIPPED, skip_reason="Broken prompt")
    claim_next(project, people[1])
    first = HumanAnnotation.objects.filter(annotator=people[0]).order_by("id").first()
    edit_annotation(first.pk, people[0], {**_answer(7), "justification": "Changed my mind after a second look."})
    HumanAnnotation.objects.create(
        item=items[9], external_annotator="dataset-rater-7", imported=True, preferences={"overall": "Tie"}
    )

    with FakeOpenAI(verdict="longer") as fake_a, FakeOpenAI(verdict="A") as fake_b:
        for name, fake in (("backup-judge-a", fake_a), ("backup-judge-b", fake_b)):
            judging.create_judge(
                name=name, backend="openai", model="fake", config={"base_url": fake.url, "max_retries": 0}
            )
        jury = judging.create_judge(name="backup-jury", backend="jury", members=["backup-judge-a", "backup-judge-b"])
        run = judging.start_run(project, jury, limit=6, enqueue=False, user=manager)
        for chunk in judging.run_chunks(run):
            judging.judge_chunk(run.pk, chunk, final=True)
        judging.finish_chunk_after_last_try(run.pk)
        solo = judging.start_run(
            project,
            judging.create_judge(
                name="backup-solo", backend="openai", model="fake", config={"base_url": fake_a.url, "max_retries": 0}
            ),
            limit=3,
            enqueue=False,
        )
        for chunk in judging.run_chunks(solo):
            judging.judge_chunk(solo.pk, chunk, final=True)
    routing = RoutingRun.objects.create(
        project=project, strategy="random", budget=0.5, budget_n=5, status=RoutingRun.DONE, summary={"n_items": 11}
    )
    Item.objects.filter(pk__in=[i.pk for i in items[:5]]).update(route=Item.HUMAN, route_reason="random draw")
    snapshot = export_now(project, format="trl-preference")
    assert snapshot.status == ExportSnapshot.DONE, snapshot.error
    RoutingCandidate.objects.create(
        project=project,
        budget=0.5,
        strategy="random",
        human_item_ids=[i.pk for i in items[2:6]],
        mixture={"category=math": 2},
        export=snapshot,
        score=0.71,
        score_source=RoutingCandidate.EXTERNAL,
        metric="pairwise_accuracy",
        scored_at=timezone.now() - timedelta(days=1),
    )
    gold_item = ItemFactory(project=project, external_id="b-gold", responses=["Right.", "Wrong."])
    GoldItem.objects.create(project=project, item=gold_item, preferred=0, note="A is right", created_by=manager)
    assert routing.pk
    assert JudgeRun.objects.filter(project=project).count() == 2
    return project


def _counts(url: str) -> dict[str, int]:
    tables = psql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").split()
    return {t: int(psql(url, f'SELECT count(*) FROM "{t}"')) for t in tables}  # noqa: S608 (names from pg_tables)


def _checksum(url: str, table: str) -> str:
    return psql(url, f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t")  # noqa: S608


def _scratch_db(base_url: str) -> tuple[str, str]:
    name = f"hp_drill_scratch_{secrets.token_hex(4)}"
    psql(base_url, f'CREATE DATABASE "{name}"')
    return name, base_url.rsplit("/", 1)[0] + "/" + name


def _drop_db(base_url: str, name: str) -> None:
    psql(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@needs_pg_dump
def test_pg_dump_restores_into_a_scratch_database_with_every_row_and_the_same_annotations(
    transactional_db, tmp_path, settings
):
    populate(tmp_path, settings)
    source = database_url()
    dump = tmp_path / "hybridpref.dump"
    subprocess.run(["pg_dump", "-Fc", "--no-owner", "-f", str(dump), source], check=True, timeout=120)
    name, scratch = _scratch_db(source)
    try:
        subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", "-d", scratch, str(dump)], check=True, timeout=120
        )
        before, after = _counts(source), _counts(scratch)
        assert after == before
        assert before["webapp_humanannotation"] >= 12
        assert before["webapp_judgment"] > 0
        for table in ("webapp_humanannotation", "webapp_judgment", "webapp_assignment", "webapp_item"):
            assert _checksum(scratch, table) == _checksum(source, table), table
    finally:
        _drop_db(source, name)


def _manifest(path: Path) -> dict[str, Any]:
    if path.is_dir():
        return json.loads((path / "manifest.json").read_text())
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/manifest.json"))
        handle = tar.extractfile(member)
        assert handle is not None
        return json.loads(handle.read())


def test_a_project_archive_imports_into_an_empty_instance_with_nothing_missing(transactional_db, tmp_path, settings):
    project = populate(tmp_path, settings)
    first = tmp_path / "first.tar.gz"
    exported = archive.export_project(SLUG, first)
    counts = exported.counts
    assert counts["items"] == 12
    assert counts["annotations"] == HumanAnnotation.objects.filter(item__project=project).count() >= 13
    assert counts["revisions"] == 1
    assert counts["judgments"] == Judgment.objects.filter(item__project=project).count() > 0
    assert counts["judges"] == 4  # the jury, its two members, the solo judge
    assert counts["users"] == 4
    assert counts["routing_candidates"] == counts["routing_runs"] == counts["exports"] == counts["gold_items"] == 1

    source = database_url()
    name, scratch = _scratch_db(source)
    try:
        env = process_env(scratch, "redis://127.0.0.1:1/0", CACHE_REDIS_URL="none")  # nothing is sent
        manage("migrate", "--noinput", env=env)
        done = manage("import_project", str(first), env=env)
        assert "created 4 inactive user(s)" in done.stdout
        assert "created judge(s)" in done.stdout
        second = tmp_path / "second"
        manage("export_project", SLUG, str(second), env=env)
        # Users are there, inactive, without a password; their profiles came along.
        assert psql(scratch, "SELECT count(*) FROM auth_user WHERE is_active") == "0"
        assert psql(scratch, "SELECT count(*) FROM auth_user WHERE password LIKE '!%'") == "4"
        assert (
            psql(
                scratch,
                "SELECT tier FROM webapp_annotatorprofile p JOIN auth_user u ON u.id = p.user_id"
                " WHERE username = 'backup-annotator-2'",
            )
            == "expert"
        )
    finally:
        _drop_db(source, name)

    a, b = _manifest(first), _manifest(second)
    assert a["counts"] == b["counts"]
    assert a["files"] == b["files"], "the re-imported project's archive differs"


def test_an_archive_imports_next_to_its_project_under_another_slug(transactional_db, tmp_path, settings):
    populate(tmp_path, settings)
    first = archive.export_project(SLUG, tmp_path / "first").path
    with pytest.raises(archive.ArchiveError, match="exists"):
        archive.import_project(first)

    result = archive.import_project(first, slug="drill-copy")
    assert result.users_created == []  # everyone is here already
    assert result.judges_created == []
    copy = Project.objects.get(slug="drill-copy")
    original = Project.objects.get(slug=SLUG)
    assert copy.items.count() == original.items.count()
    assert (
        HumanAnnotation.objects.filter(item__project=copy).count()
        == HumanAnnotation.objects.filter(item__project=original).count()
    )
    files = {p.name for p in first.iterdir()}
    assert files == {"manifest.json", "project.json", "users.jsonl", "judges.jsonl"} | {
        f"{t.name}.jsonl" for t in archive.TABLES
    }
    rows = [json.loads(line) for line in (first / "annotations.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["annotator"]]
    assert all(r["annotator"].startswith("backup-annotator-") for r in mine)
    assert all(isinstance(r["assignment"], int) for r in mine)
    assert [r["_id"] for r in rows] == list(range(1, len(rows) + 1))
    assert any(r["external_annotator"] == "dataset-rater-7" and r["assignment"] is None for r in rows)
    judges = {j["name"]: j for j in map(json.loads, (first / "judges.jsonl").read_text().splitlines())}
    assert judges["backup-jury"]["members"] == ["backup-judge-a", "backup-judge-b"]
    assert "id" not in json.loads((first / "project.json").read_text())
    second = archive.export_project("drill-copy", tmp_path / "second").path
    a, b = _manifest(first)["files"], _manifest(second)["files"]
    assert a.pop("project.json") != b.pop("project.json")  # the slug
    assert a == b
    copied = json.loads((second / "project.json").read_text())
    assert {**copied, "slug": SLUG} == json.loads((first / "project.json").read_text())
    assert get_user_model().objects.filter(username__startswith="backup-").count() == 4


def test_a_damaged_archive_is_refused_before_anything_is_written(transactional_db, tmp_path, settings):
    populate(tmp_path, settings)
    path = archive.export_project(SLUG, tmp_path / "first").path
    with (path / "annotations.jsonl").open("a") as fh:
        fh.write('{"item": "b-1"}\n')
    projects = Project.objects.count()
    with pytest.raises(archive.ArchiveError, match="sha256"):
        archive.import_project(path, slug="drill-damaged")
    assert Project.objects.count() == projects
    assert connection.vendor == "postgresql"


def test_a_deleted_project_comes_back_whole_from_its_archive(transactional_db, tmp_path, settings):
    populate(tmp_path, settings)
    first = archive.export_project(SLUG, tmp_path / "first.tgz").path
    doomed = Project.objects.get(slug=SLUG)
    # An annotation protects its assignment (on_delete=PROTECT): a project with annotations is deleted in two steps.
    HumanAnnotation.objects.filter(item__project=doomed).delete()
    doomed.delete()
    assert not HumanAnnotation.objects.filter(item__project__slug=SLUG).exists()

    result = archive.import_project(first)
    assert result.project.slug == SLUG
    assert result.notes == []  # the judges, still here, are the archived ones
    second = archive.export_project(SLUG, tmp_path / "second").path
    assert _manifest(first)["files"] == _manifest(second)["files"]

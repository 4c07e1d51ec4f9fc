"""Exports from the database: snapshots, files, checksums, the card, and errors that leave nothing behind."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from io import StringIO
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.factories import ItemFactory, ProjectFactory, UserFactory
from webapp.models import ExportSnapshot, HumanAnnotation, Item, Judge, Judgment
from webapp.services import exports
from webapp.services.exports import ExportFailed, create_snapshot, export_now, run_snapshot, stream_items
from webapp.services.imports import import_file

pytestmark = pytest.mark.django_db

A_CLEAR, A_SLIGHT, TIE, B_SLIGHT, B_CLEAR = (
    "A-is-clearly-better",
    "A-is-slightly-better",
    "Tie",
    "B-is-slightly-better",
    "B-is-clearly-better",
)


@pytest.fixture
def labelled(db):
    """Three pairwise items: two with human labels (normal + expert), one with an AI verdict only."""
    project = ProjectFactory(slug="exp", aspects=["overall", "helpful"])
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    items = [
        ItemFactory(project=project, external_id=f"q{k}", prompt=f"Question {k}?", responses=[f"A{k}", f"B{k}"])
        for k in range(3)
    ]
    Item.objects.filter(pk__in=[items[0].pk, items[1].pk]).update(route="human")
    Item.objects.filter(pk=items[2].pk).update(route="ai")
    for item, (a, b) in zip(items[:2], [(A_CLEAR, A_SLIGHT), (B_SLIGHT, TIE)], strict=True):
        HumanAnnotation.objects.create(
            item=item,
            annotator=alice,
            tier="normal",
            preferences={"overall": a, "helpful": a},
            confidence={"overall": "fairly-confident"},
            justification=f"alice on {item.external_id}",
            time_spent=12.5,
        )
        HumanAnnotation.objects.create(
            item=item,
            annotator=bob,
            tier="expert",
            preferences={"overall": b, "helpful": b},
            reasons={"overall": ["more accurate"]},
            justification=f"bob on {item.external_id}",
        )
    judge = Judge.objects.create(name="gpt", backend="openai", model="m")
    Judgment.objects.create(
        item=items[2],
        judge=judge,
        order="combined",
        prompt_version="v1",
        status="done",
        labels={"overall": B_CLEAR, "helpful": B_CLEAR},
        rationale="B is right.",
        order_inconsistent=False,
    )
    return project, items


def test_items_stream_with_their_responses_labels_and_verdicts_in_id_order(labelled):
    project, _items = labelled
    streamed = list(stream_items(project))
    assert [s.external_id for s in streamed] == ["q0", "q1", "q2"]
    first = streamed[0]
    assert [r.text for r in first.responses] == ["A0", "B0"]
    assert [(h.annotator, h.tier, h.preferences["overall"]) for h in first.humans] == [
        ("alice", "normal", A_CLEAR),
        ("bob", "expert", A_SLIGHT),
    ]
    assert first.humans[0].confidence == {"overall": "fairly-confident"}
    assert first.humans[0].time_spent == 12.5
    assert streamed[2].ais[0].judge == "gpt"
    assert streamed[2].ais[0].labels == {"overall": B_CLEAR, "helpful": B_CLEAR}
    assert (streamed[0].route, streamed[2].route) == ("human", "ai")
    assert [s.external_id for s in stream_items(project, routes=["ai"])] == ["q2"]


@pytest.mark.parametrize(
    "created",
    [
        datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC),  # no fraction: isoformat leaves it out
        datetime(2024, 5, 1, 10, 0, 0, 123400, tzinfo=UTC),  # trailing zeros kept, six digits
        datetime(2024, 12, 31, 23, 59, 59, 5, tzinfo=UTC),
        datetime(2024, 3, 31, 3, 30, 0, 999999, tzinfo=timezone(timedelta(hours=2))),  # stored as UTC
    ],
)
def test_an_annotation_without_its_own_timestamp_is_exported_with_its_creation_time_in_iso_format(labelled, created):
    project, items = labelled
    annotation = HumanAnnotation.objects.filter(item=items[0], annotator__username="alice").get()
    HumanAnnotation.objects.filter(pk=annotation.pk).update(created_at=created, external_timestamp="")
    first = next(iter(stream_items(project)))
    expected = created.astimezone(UTC).isoformat()
    assert [h.timestamp for h in first.humans if h.annotator == "alice"] == [expected]
    assert expected.endswith("+00:00")


def test_a_trl_export_is_a_recorded_snapshot_with_checksums_and_a_card(labelled, tmp_path):
    project, _ = labelled
    snapshot = export_now(project, format="trl-preference", file_type="jsonl", out=tmp_path / "out")
    assert snapshot.status == ExportSnapshot.DONE, snapshot.error
    assert (snapshot.version, snapshot.item_count) == (1, 3)
    rows = [json.loads(line) for line in (tmp_path / "out" / "trl-preference.jsonl").read_text().splitlines()]
    # q0: humans agree A wins; q1: normal says B, expert says tie -> split; q2: AI says B.
    by_prompt = {r["prompt"]: r for r in rows}
    assert by_prompt["Question 0?"]["chosen"] == "A0"
    assert by_prompt["Question 0?"]["rejected"] == "B0"
    assert by_prompt["Question 2?"]["chosen"] == "B2"
    assert by_prompt["Question 2?"]["source"] == "ai:gpt@v1"
    assert snapshot.row_count == len(rows)
    names = {f["name"] for f in snapshot.files}
    assert names == {"trl-preference.jsonl", "README.md"}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "ai:gpt@v1" in card
    assert snapshot.code_version.startswith("hybridpref ")
    import hashlib

    for f in snapshot.files:
        assert hashlib.sha256((tmp_path / "out" / f["name"]).read_bytes()).hexdigest() == f["sha256"]


def test_the_same_export_twice_gives_byte_identical_data_files(labelled, tmp_path):
    project, _ = labelled
    for file_type in ("jsonl", "parquet", "hf"):
        one = export_now(project, format="multipref", file_type=file_type, out=tmp_path / f"{file_type}-1")
        two = export_now(project, format="multipref", file_type=file_type, out=tmp_path / f"{file_type}-2")
        data = lambda s: {f["name"]: f["sha256"] for f in s.files if f["name"] != "README.md"}  # noqa: E731
        assert data(one) == data(two)
        assert data(one)
        assert two.version == one.version + 1


def test_a_parquet_export_has_the_formats_exact_columns(labelled, tmp_path):
    project, _ = labelled
    snapshot = export_now(project, format="helpsteer2-preference", file_type="parquet", out=tmp_path / "hs2")
    table = pq.read_table(tmp_path / "hs2" / "helpsteer2-preference.parquet")
    hs2 = [
        "prompt",
        "response_1",
        "response_2",
        "preference_strength",
        "preference_statement",
        "preference_elaboration",
        "split",
    ]
    assert [c for c in table.column_names if c in hs2] == hs2
    assert str(table.schema.field("preference_strength").type) in ("int8", "int16", "int32", "int64")
    assert table.num_rows == snapshot.row_count


def test_an_hf_export_opens_with_datasets(labelled, tmp_path):
    datasets = pytest.importorskip("datasets")
    project, _ = labelled
    snapshot = export_now(project, format="trl-unpaired", file_type="hf", out=tmp_path / "hf")
    dataset = datasets.load_from_disk(str(tmp_path / "hf" / "hf"))
    assert len(dataset) == snapshot.row_count
    assert {"prompt", "completion", "label"} <= set(dataset.column_names)


def test_a_multipref_export_imports_back_with_the_same_labels(labelled, tmp_path):
    project, _ = labelled
    export_now(project, format="multipref", file_type="jsonl", out=tmp_path / "mp")
    again = ProjectFactory(slug="again", aspects=["overall", "helpful"])
    result = import_file(again, tmp_path / "mp" / "multipref.jsonl", fmt="multipref")
    assert result.created == 3
    original = {
        (a.item.external_id, a.annotator.username if a.annotator else a.external_annotator): a.preferences
        for a in HumanAnnotation.objects.filter(item__project=project).select_related("item", "annotator")
    }
    imported = {
        (a.item.external_id, a.external_annotator): a.preferences
        for a in HumanAnnotation.objects.filter(item__project=again).select_related("item")
    }
    assert imported == original


def test_bad_requests_are_named_and_leave_no_files(labelled, tmp_path):
    project, _ = labelled
    with pytest.raises(ExportFailed, match="unknown format"):
        create_snapshot(project, format="csv-ish", out=tmp_path / "x")
    with pytest.raises(ExportFailed, match="no items"):
        create_snapshot(ProjectFactory(slug="empty"), format="trl-preference", out=tmp_path / "y")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(ExportFailed, match="not a writable directory"):
        create_snapshot(project, format="trl-preference", out=a_file / "z")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ExportFailed, match="not an empty directory"):
        create_snapshot(project, format="trl-preference", out=occupied)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "occupied"]
    assert list(occupied.iterdir()) == [occupied / "keep.txt"]
    assert not ExportSnapshot.objects.exists()


def test_an_export_with_no_labels_of_the_kind_asked_fails_cleanly(labelled, tmp_path):
    project, _ = labelled
    snapshot = export_now(
        project,
        format="trl-preference",
        options={"label_source": "ai", "aspect": "helpful", "ai_judge": "nobody"},
        out=tmp_path / "none",
    )
    assert snapshot.status == ExportSnapshot.FAILED
    assert "no item" in snapshot.error
    assert list(tmp_path.iterdir()) == []


def test_a_finished_snapshot_is_not_written_again(labelled, tmp_path):
    project, _ = labelled
    snapshot = export_now(project, format="trl-preference", out=tmp_path / "once")
    mtime = (tmp_path / "once" / "trl-preference.jsonl").stat().st_mtime_ns
    assert run_snapshot(snapshot.pk).status == ExportSnapshot.DONE
    assert (tmp_path / "once" / "trl-preference.jsonl").stat().st_mtime_ns == mtime


def test_the_export_command_prints_the_files_and_names_bad_options(labelled, tmp_path):
    out = StringIO()
    call_command(
        "export_dataset",
        "exp",
        "--format",
        "trl-preference",
        "--conversational",
        "--out",
        str(tmp_path / "c"),
        stdout=out,
    )
    assert "exp v1: " in out.getvalue()
    assert "trl-preference.jsonl" in out.getvalue()
    row = json.loads((tmp_path / "c" / "trl-preference.jsonl").read_text().splitlines()[0])
    assert row["prompt"] == [{"role": "user", "content": "Question 0?"}]
    with pytest.raises(CommandError, match="unknown rule"):
        call_command("export_dataset", "exp", "--format", "trl-preference", "--rule", "loudest", stdout=StringIO())
    with pytest.raises(CommandError, match="no project"):
        call_command("export_dataset", "nope", "--format", "trl-preference", stdout=StringIO())


def test_a_ranking_project_cannot_be_exported_as_multipref(db, tmp_path):
    project = ProjectFactory(slug="rk", kind="ranking")
    ItemFactory(project=project, responses=["a", "b", "c"])
    with pytest.raises(ExportFailed, match="pairwise"):
        create_snapshot(project, format="multipref", out=tmp_path / "r")
    assert not Path(tmp_path / "r").exists()


def test_a_manager_starts_an_export_in_the_ui_and_downloads_its_files(
    labelled, tmp_path, settings, client, django_capture_on_commit_callbacks
):
    from webapp.models import Membership

    project, _ = labelled
    settings.EXPORT_DIR = tmp_path / "exports"
    manager = UserFactory(username="boss")
    Membership.objects.create(project=project, user=manager, role=Membership.MANAGER)
    client.force_login(manager)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(f"/p/{project.slug}/exports/new", {"format": "trl-preference", "file_type": "parquet"})
    assert len(callbacks) == 1  # the worker's task goes out once the snapshot row is committed
    assert response.status_code == 302
    snapshot = ExportSnapshot.objects.get()
    assert snapshot.status == ExportSnapshot.RUNNING
    page = client.get(f"/p/{project.slug}/exports/").content.decode()
    assert 'hx-trigger="every 2s"' in page
    run_snapshot(snapshot.pk)  # what the worker's task does
    page = client.get(f"/p/{project.slug}/exports/", headers={"HX-Request": "true"}).content.decode()
    assert page.lstrip().startswith('<section id="snapshots"')
    assert "trl-preference.parquet" in page
    download = client.get(f"/p/{project.slug}/exports/v1/trl-preference.parquet")
    assert download.status_code == 200
    assert download.streaming
    body = b"".join(download.streaming_content)
    assert body == (Path(snapshot.path) / "trl-preference.parquet").read_bytes()
    assert client.get(f"/p/{project.slug}/exports/v1/../../settings.py").status_code == 404
    assert client.get(f"/p/{project.slug}/exports/v9/README.md").status_code == 404


def test_export_errors_show_on_the_page_and_annotators_are_kept_out(labelled, client, annotator):
    from webapp.models import Membership

    project, _ = labelled
    manager = UserFactory(username="boss2")
    Membership.objects.create(project=project, user=manager, role=Membership.MANAGER)
    client.force_login(manager)
    response = client.post(f"/p/{project.slug}/exports/new", {"format": "trl-preference", "seed": "x"})
    assert response.status_code == 400
    assert "must be numbers" in response.content.decode()
    Membership.objects.create(project=project, user=annotator, role=Membership.ANNOTATOR)
    client.force_login(annotator)
    assert client.get(f"/p/{project.slug}/exports/").status_code == 403
    assert client.get(f"/p/{project.slug}/exports/v1/README.md").status_code == 403


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "export-fetch"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="server-side cursors are PostgreSQL's")
def test_rows_stream_in_order_across_prefetched_batches(db, monkeypatch):
    monkeypatch.setattr(exports, "FETCH", 7)
    rows = list(exports._cursor_rows("t", "SELECT g, g * 2 FROM generate_series(1, 100) g ORDER BY g", []))
    assert rows == [(g, g * 2) for g in range(1, 101)]
    assert _prefetch_threads() == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="server-side cursors are PostgreSQL's")
def test_a_stream_closed_early_stops_its_fetcher_and_leaves_the_connection_usable(db, monkeypatch):
    monkeypatch.setattr(exports, "FETCH", 10)
    stream = exports._cursor_rows("t", "SELECT g FROM generate_series(1, 100000) g", [])
    assert [next(stream) for _ in range(25)] == [(g,) for g in range(1, 26)]
    stream.close()  # as when a writer fails half-way
    assert _prefetch_threads() == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT 42")
        assert cursor.fetchone() == (42,)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="server-side cursors are PostgreSQL's")
def test_a_database_error_in_a_later_batch_reaches_the_reader(db, monkeypatch):
    monkeypatch.setattr(exports, "FETCH", 10)
    stream = exports._cursor_rows("t", "SELECT 100 / (50 - g) FROM generate_series(1, 100) g", [])
    seen = [next(stream) for _ in range(40)]  # the batches before the failing one
    assert seen == [(100 // (50 - g),) for g in range(1, 41)]
    with pytest.raises(psycopg.errors.DivisionByZero):
        next(stream)
    assert _prefetch_threads() == []

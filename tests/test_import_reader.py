"""A large file is read by a child process: the same items and the same errors as reading it here."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from webapp.importing import reader
from webapp.importing.reader import Errors, ReaderFailed, ReadSettings, read_batches, read_batches_in_process
from webapp.models import HumanAnnotation, Item, Judgment, Response
from webapp.services import imports
from webapp.services.imports import ImportFailed, import_file

pytestmark = pytest.mark.django_db


def row(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"item-{i}",
        "prompt": f"Question {i}, ünïcødé 🌍 and a tab\t?",
        "responses": [{"text": f"First answer to {i}.", "model": "m-a"}, {"text": f"Second {i} 🙂", "model": "m-b"}],
        "metadata": {"n": i, "nested": {"list": [1, 2.5, None]}},
        **extra,
    }


def settings_for(project, path: Path, batch_size: int = 3) -> ReadSettings:
    return ReadSettings(path, "native", "jsonl", project.scheme(), 200_000, batch_size)


@pytest.fixture
def started(monkeypatch) -> list[subprocess.Popen[bytes]]:
    """The child processes the reader starts, as they start."""
    children: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        children.append(real_popen(*args, **kwargs))
        return children[-1]

    monkeypatch.setattr(reader.subprocess, "Popen", spy)
    return children


def test_the_child_process_reads_the_same_batches_and_errors_as_this_one(project, write_jsonl):
    rows: list[Any] = [row(i) for i in range(7)]
    rows[2] = row(2, responses=[{"text": "only one"}])
    rows[4] = "{not json"
    rows.append(row(1))  # a duplicate id
    path = write_jsonl(rows)
    here, there = Errors(), Errors()

    batches = list(read_batches(settings_for(project, path), here))
    from_child = list(read_batches_in_process(settings_for(project, path), there))

    assert from_child == batches
    assert [[w for w, _ in b] for b in batches] == [["line 1", "line 2", "line 4"], ["line 6", "line 7"]]
    assert there.messages == here.messages
    assert there.total == here.total == 3
    assert batches[0][0][1].prompt == "Question 0, ünïcødé 🌍 and a tab\t?".encode()


def test_past_fifty_problems_the_child_reports_the_first_fifty_and_counts_them_all(project, write_jsonl):
    path = write_jsonl([row(i, responses=[]) for i in range(60)])
    errors = Errors()

    assert list(read_batches_in_process(settings_for(project, path), errors)) == []

    assert len(errors.messages) == 50
    assert errors.total == 60


def test_a_child_that_fails_says_why(project, tmp_path):
    gone = tmp_path / "gone.jsonl"

    with pytest.raises(ReaderFailed, match=r"ended early \(exit status 1\): FileNotFoundError: .*gone.jsonl"):
        list(read_batches_in_process(settings_for(project, gone), Errors()))


def test_closing_the_batches_early_stops_the_child(project, write_jsonl, started):
    path = write_jsonl([row(i) for i in range(5000)])
    batches = read_batches_in_process(settings_for(project, path, batch_size=10), Errors())

    assert len(next(batches)) == 10
    batches.close()

    assert started[0].returncode is not None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the child process serves the COPY writer")
def test_a_large_file_is_imported_through_the_child_process(project, write_jsonl, settings, monkeypatch):
    calls: list[str] = []
    real = imports.read_batches_in_process

    def spy(*args: Any) -> Any:
        calls.append("child")
        return real(*args)

    monkeypatch.setattr(imports, "read_batches_in_process", spy)
    settings.IMPORT_READER_PROCESS_MIN_BYTES = 1
    settings.IMPORT_BATCH_SIZE = 4
    rows = [row(i) for i in range(10)]
    rows[3]["human_annotations"] = [{"annotator": "ann-3", "labels": {"overall": "Tie"}}]
    rows[5]["llm_annotations"] = [{"judge": "j-5", "labels": {"overall": "A-is-slightly-better"}}]

    result = import_file(project, write_jsonl(rows))

    assert calls == ["child"]
    assert result.created == 10
    item = Item.objects.get(project=project, external_id="item-3")
    assert item.prompt == rows[3]["prompt"]
    assert item.metadata == rows[3]["metadata"]
    assert list(item.responses.values_list("position", "model_name", "text")) == [
        (0, "m-a", "First answer to 3."),
        (1, "m-b", "Second 3 🙂"),
    ]
    assert HumanAnnotation.objects.get(item=item).external_annotator == "ann-3"
    assert Judgment.objects.get(item__external_id="item-5").judge.name == "j-5"
    assert Response.objects.filter(item__project=project).count() == 20
    assert import_file(project, write_jsonl(rows, name="again.jsonl")).unchanged == 10


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the child process serves the COPY writer")
def test_a_failed_child_imports_nothing_and_says_so(project, write_jsonl, settings, monkeypatch):
    def failing(*args: Any) -> Any:
        raise ReaderFailed("the process reading the file ended early (exit status -9): no message")
        yield  # a generator, as the real one

    monkeypatch.setattr(imports, "read_batches_in_process", failing)
    settings.IMPORT_READER_PROCESS_MIN_BYTES = 1

    with pytest.raises(ImportFailed, match="exit status -9"):
        import_file(project, write_jsonl([row(1)]))

    assert not Item.objects.filter(project=project).exists()


def test_a_child_killed_half_way_is_a_failure_not_a_short_file(project, write_jsonl, started):
    path = write_jsonl([row(i) for i in range(20000)])
    batches = read_batches_in_process(settings_for(project, path, batch_size=10), Errors())
    assert len(next(batches)) == 10

    started[0].kill()

    with pytest.raises(ReaderFailed, match=r"exit status -9"):
        for _ in batches:
            pass

"""The `import_items` management command: what it prints, and how it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.factories import ProjectFactory
from webapp.models import HumanAnnotation, Item, Judge, Judgment, Response

ROOT = Path(__file__).resolve().parent.parent


def counts() -> dict[str, int]:
    return {m.__name__: m.objects.count() for m in (Item, Response, HumanAnnotation, Judgment, Judge)}


def native(i: int, **extra: object) -> dict[str, object]:
    return {"id": f"item-{i}", "prompt": f"Question {i}?", "responses": [{"text": "yes"}, {"text": "no"}], **extra}


def run(*args: str) -> str:
    out = StringIO()
    call_command("import_items", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_a_successful_import_says_what_it_created(project, write_jsonl):
    path = write_jsonl([native(1), native(2), native(3)])

    assert run("prefs", str(path)) == "prefs: 3 created, 0 updated, 0 unchanged\n"
    assert Item.objects.filter(project=project).count() == 3


@pytest.mark.django_db
def test_running_the_same_import_again_reports_everything_unchanged(project, write_jsonl):
    path = write_jsonl([native(1), native(2)])
    run("prefs", str(path))

    assert run("prefs", str(path)) == "prefs: 0 created, 0 updated, 2 unchanged\n"
    assert Item.objects.filter(project=project).count() == 2


@pytest.mark.django_db
def test_changed_items_are_listed_and_update_applies_them(project, write_jsonl):
    run("prefs", str(write_jsonl([native(1), native(2)])))
    changed = write_jsonl([native(1), native(2, prompt="Reworded?")], name="v2.jsonl")

    assert run("prefs", str(changed)) == (
        "prefs: 0 created, 0 updated, 1 unchanged\n"
        "1 item(s) differ from the file and were left as they are (re-run with --update to apply): item-2\n"
    )
    assert Item.objects.get(external_id="item-2").prompt == "Question 2?"

    assert run("prefs", str(changed), "--update") == "prefs: 0 created, 1 updated, 1 unchanged\n"
    assert Item.objects.get(external_id="item-2").prompt == "Reworded?"


@pytest.mark.django_db
def test_the_format_and_file_type_options_are_passed_on(project, tmp_path):
    path = tmp_path / "helpsteer.txt"
    row = {"prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": 1}
    path.write_text(json.dumps(row) + "\n")

    output = run("prefs", str(path), "--format", "helpsteer2-preference", "--file-type", "jsonl")

    assert output == "prefs: 1 created, 0 updated, 0 unchanged\n"
    assert HumanAnnotation.objects.get().preferences == {"overall": "B-is-slightly-better"}


@pytest.mark.django_db
def test_an_unknown_project_is_a_command_error(project, write_jsonl):
    with pytest.raises(CommandError, match=r"^no project 'nope'$"):
        run("nope", str(write_jsonl([native(1)])))
    assert not Item.objects.exists()


@pytest.mark.django_db
def test_a_bad_file_is_a_command_error_listing_the_problems_and_nothing_is_written(project, write_jsonl):
    run("prefs", str(write_jsonl([native(1)], name="first.jsonl")))
    before = counts()
    bad = write_jsonl([native(2), {"id": "item-3", "prompt": "p"}, native(4, extra=True)])

    with pytest.raises(CommandError) as caught:
        run("prefs", str(bad))

    assert str(caught.value) == (
        "2 problem(s); nothing was imported:\n"
        "line 2: responses: Field required\n"
        "line 3: extra: unknown field (put extra keys under metadata)"
    )
    assert counts() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "alpaca"], "unknown format 'alpaca'"),
        (["--file-type", "xml"], "unknown file type 'xml'"),
    ],
)
def test_bad_options_are_command_errors(project, write_jsonl, args, message):
    with pytest.raises(CommandError, match=message):
        run("prefs", str(write_jsonl([native(1)])), *args)
    assert not Item.objects.exists()


@pytest.mark.django_db
def test_a_missing_file_is_a_command_error(project, tmp_path):
    with pytest.raises(CommandError, match=r"no such file: .*missing\.jsonl"):
        run("prefs", str(tmp_path / "missing.jsonl"))


@pytest.mark.django_db
def test_an_empty_file_is_a_command_error(project, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")

    with pytest.raises(CommandError, match="file: the file holds no items"):
        run("prefs", str(path))


def _subprocess_env(tmp_path: Path) -> dict[str, str]:
    """The test database, for a separate `manage.py` process."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "") + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    port = f":{db['PORT']}" if db["PORT"] else ""
    url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}{port}/{quote(db['NAME'])}"
    return {**os.environ, "HYBRIDPREF_MODE": "test", "DATABASE_URL": url, "HYBRIDPREF_DATA_DIR": str(tmp_path)}


@pytest.mark.django_db(transaction=True)
def test_the_command_line_exits_non_zero_with_the_problems_on_stderr(tmp_path, write_jsonl):
    ProjectFactory(slug="cli-project")
    bad = write_jsonl([native(1), {"id": "item-2", "prompt": "p", "responses": [{"text": "only one"}]}])
    python = ROOT / ".venv" / "bin" / "python"

    failed = subprocess.run(
        [str(python if python.exists() else sys.executable), "manage.py", "import_items", "cli-project", str(bad)],
        cwd=ROOT,
        env=_subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert failed.returncode == 1
    assert "CommandError: 1 problem(s); nothing was imported:" in failed.stderr
    assert "line 2: responses: a pairwise project needs exactly 2 responses, got 1" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stdout == ""
    assert not Item.objects.exists()

    unknown = subprocess.run(
        [str(python if python.exists() else sys.executable), "manage.py", "import_items", "no-such", str(bad)],
        cwd=ROOT,
        env=_subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode == 1
    assert "CommandError: no project 'no-such'" in unknown.stderr

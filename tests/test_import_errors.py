"""A bad file imports nothing, and says which row and which field are wrong."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.factories import ProjectFactory, UserFactory
from webapp.importing.formats import COLUMN_LENGTHS
from webapp.models import HumanAnnotation, Item, Judge, Judgment, Response
from webapp.services import imports
from webapp.services.imports import MAX_REPORTED_ERRORS, ImportFailed, import_file

pytestmark = pytest.mark.django_db


def counts() -> dict[str, int]:
    return {m.__name__: m.objects.count() for m in (Item, Response, HumanAnnotation, Judgment, Judge)}


def contents() -> list[tuple[Any, ...]]:
    """What is in the item tables, to compare before and after a failed import."""
    return [
        *Item.objects.order_by("pk").values_list("pk", "external_id", "prompt", "metadata", "content_hash"),
        *Response.objects.order_by("pk").values_list("pk", "item_id", "position", "model_name", "text"),
        *HumanAnnotation.objects.order_by("pk").values_list("pk", "item_id", "external_annotator", "preferences"),
        *Judgment.objects.order_by("pk").values_list("pk", "item_id", "judge_id", "labels"),
        *Judge.objects.order_by("pk").values_list("pk", "name"),
    ]


def native(i: int | str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"item-{i}",
        "prompt": f"Question {i}?",
        "responses": [
            {"text": f"First answer to {i}.", "model": "m-a"},
            {"text": f"Second answer to {i}.", "model": "m-b"},
        ],
        **extra,
    }


def annotated(i: int | str, **extra: Any) -> dict[str, Any]:
    """A native row that also brings a human annotation and a judgment of a judge not yet on record."""
    return native(
        i,
        human_annotations=[{"annotator": f"ann-{i}", "labels": {"overall": "Tie"}}],
        llm_annotations=[{"judge": f"judge-{i}", "labels": {"overall": "A-is-slightly-better"}}],
        **extra,
    )


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k not in header)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})
    return path


def write_json(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def before(project, write_jsonl) -> dict[str, Any]:
    """The project already holds items, annotations and judgments: a failed import must leave them as they are."""
    import_file(project, write_jsonl([annotated("old-1"), annotated("old-2")], name="existing.jsonl"))
    return {"counts": counts(), "contents": contents()}


def failing(project: Any, path: Path | str, **kwargs: Any) -> ImportFailed:
    with pytest.raises(ImportFailed) as caught:
        import_file(project, path, **kwargs)
    return caught.value


def assert_nothing_written(before: dict[str, Any]) -> None:
    assert counts() == before["counts"]
    assert contents() == before["contents"]


# --- missing fields and wrong types -------------------------------------------------------------


def test_a_row_without_responses_names_the_row_and_the_field(project, write_jsonl, before):
    bad = native(2)
    del bad["responses"]

    error = failing(project, write_jsonl([native(1), bad, native(3)]))

    assert error.errors == ["line 2: responses: Field required"]
    assert error.total == 1
    assert str(error) == "1 problem(s); nothing was imported:\nline 2: responses: Field required"
    assert_nothing_written(before)


def test_a_row_without_an_id_names_the_row_and_the_field(project, write_jsonl, before):
    bad = native(2)
    del bad["id"]

    error = failing(project, write_jsonl([native(1), bad]))

    assert error.errors == ["line 2: id: Field required"]
    assert_nothing_written(before)


def test_a_blank_id_is_refused(project, write_jsonl, before):
    error = failing(project, write_jsonl([{**native(1), "id": "  "}]))

    assert error.errors == ["line 1: id: Value error, must not be empty"]
    assert_nothing_written(before)


def test_a_row_with_neither_prompt_nor_conversation_is_refused(project, write_jsonl, before):
    error = failing(project, write_jsonl([{**native(1), "prompt": "   "}, {**native(2), "prompt": None}]))

    assert error.errors == [
        "line 1: prompt: an item needs a prompt or a conversation",
        "line 2: prompt: an item needs a prompt or a conversation",
    ]
    assert_nothing_written(before)


def test_wrong_types_name_every_wrong_field(project, write_jsonl, before):
    row = {"id": "x", "prompt": 5, "responses": "two answers", "metadata": ["not", "a", "dict"]}

    error = failing(project, write_jsonl([native(1), row]))

    assert error.errors == [
        "line 2: prompt: Input should be a valid string",
        "line 2: responses: Input should be a valid list",
        "line 2: metadata: Input should be a valid dictionary",
    ]
    assert_nothing_written(before)


def test_wrong_types_inside_nested_objects_name_the_full_path(project, write_jsonl, before):
    row = native(
        1,
        conversation=[{"role": "bot", "content": "hi"}],
        responses=[{"text": 7}, {"text": "ok", "model": None}],
        human_annotations=[{"annotator": "a", "labels": {"overall": "Tie"}, "time_spent": "long"}],
    )

    error = failing(project, write_jsonl([row]))

    assert error.errors == [
        "line 1: conversation.0.role: Input should be 'system', 'user' or 'assistant'",
        "line 1: responses.0.text: Input should be a valid string",
        "line 1: responses.1.model: Input should be a valid string",
        "line 1: human_annotations.0.time_spent: Input should be a valid number, unable to parse string as a number",
    ]
    assert_nothing_written(before)


@pytest.mark.parametrize(
    ("bad_id", "shown"), [(True, "true"), (None, "null"), (1.5, "1.5"), ([1], "[1]"), ({"a": 1}, '{"a": 1}')]
)
def test_an_id_that_is_neither_a_string_nor_an_integer_is_refused(project, write_jsonl, before, bad_id, shown):
    error = failing(project, write_jsonl([{**native(1), "id": bad_id}]))

    assert error.errors == [f"line 1: id: Value error, must be a string or an integer, not {shown}"]
    assert_nothing_written(before)


def test_a_boolean_label_is_not_read_as_a_number(write_jsonl):
    project = ProjectFactory(scale="strength7")
    row = native(
        1,
        human_annotations=[{"annotator": "a", "labels": {"overall": True}}],
        llm_annotations=[{"judge": "j", "labels": {"overall": False}}],
    )

    error = failing(project, write_jsonl([row]))

    assert error.errors == [
        "line 1: human_annotations.0.labels.overall: Value error, must be a string or an integer, not true",
        "line 1: llm_annotations.0.labels.overall: Value error, must be a string or an integer, not false",
    ]
    assert counts() == {"Item": 0, "Response": 0, "HumanAnnotation": 0, "Judgment": 0, "Judge": 0}


def test_a_row_that_is_not_an_object_is_refused(project, write_jsonl, before):
    error = failing(project, write_jsonl([native(1), "[1, 2]", '"text"']))

    assert error.errors == [
        "line 2: expected a JSON object, got list",
        "line 3: expected a JSON object, got str",
    ]
    assert_nothing_written(before)


# --- duplicates ---------------------------------------------------------------------------------


def test_duplicate_ids_in_a_file_name_both_places(project, write_jsonl, before):
    error = failing(project, write_jsonl([native(1), native(2), native(1), native(3), native(2)]))

    assert error.errors == [
        "line 3: id: duplicate id 'item-1' (also at line 1)",
        "line 5: id: duplicate id 'item-2' (also at line 2)",
    ]
    assert_nothing_written(before)


def test_an_integer_id_and_the_same_id_as_text_are_duplicates(project, write_jsonl, before):
    error = failing(project, write_jsonl([{**native(1), "id": 7}, {**native(2), "id": "7"}]))

    assert error.errors == ["line 2: id: duplicate id '7' (also at line 1)"]
    assert_nothing_written(before)


def test_duplicate_ids_in_a_csv_file_name_both_rows(project, tmp_path, before):
    rows = [
        {"id": "a", "prompt": "p", "response_1": "x", "response_2": "y"},
        {"id": "b", "prompt": "multi\nline\nprompt", "response_1": "x", "response_2": "y"},
        {"id": "a", "prompt": "p", "response_1": "x", "response_2": "y"},
    ]

    error = failing(project, write_csv(tmp_path / "items.csv", rows))

    assert error.errors == ["row 4: id: duplicate id 'a' (also at row 2)"]
    assert_nothing_written(before)


def test_the_same_annotator_or_judge_twice_on_one_item_is_refused(project, write_jsonl, before):
    row = native(
        1,
        human_annotations=[
            {"annotator": "a", "labels": {"overall": "Tie"}},
            {"annotator": "a", "labels": {"overall": "Tie"}},
        ],
        llm_annotations=[{"judge": "j", "labels": {"overall": "Tie"}}, {"judge": "j", "labels": {"overall": "Tie"}}],
    )

    error = failing(project, write_jsonl([row]))

    assert error.errors == [
        "line 1: human_annotations.1.annotator: 'a' appears twice for this item",
        "line 1: llm_annotations.1.judge: 'j' appears twice for this item",
    ]
    assert_nothing_written(before)


# --- the project's scheme -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_a_pairwise_project_needs_exactly_two_responses(project, write_jsonl, before, n):
    row = {**native(1), "responses": [{"text": f"answer {k}"} for k in range(n)]}

    error = failing(project, write_jsonl([row]))

    assert error.errors == [f"line 1: responses: a pairwise project needs exactly 2 responses, got {n}"]
    assert_nothing_written(before)


def test_a_ranking_project_needs_two_responses_and_a_full_ranking(write_jsonl):
    project = ProjectFactory(kind="ranking", aspects=["overall"])
    three = [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    rows = [
        {"id": "one", "prompt": "p", "responses": [{"text": "alone"}]},
        {"id": "no-ranking", "prompt": "p", "responses": three, "human_annotations": [{"annotator": "r"}]},
        {
            "id": "short",
            "prompt": "p",
            "responses": three,
            "human_annotations": [{"annotator": "r", "ranking": [0, 1]}],
        },
        {
            "id": "ties",
            "prompt": "p",
            "responses": three,
            "human_annotations": [{"annotator": "r", "ranking": [[0, 1], 2]}],
        },
        {
            "id": "prefs",
            "prompt": "p",
            "responses": three,
            "llm_annotations": [{"judge": "j", "labels": {"overall": "Tie"}}],
        },
    ]

    error = failing(project, write_jsonl(rows))

    assert error.errors == [
        "line 1: responses: a ranking project needs at least 2 responses, got 1",
        "line 2: human_annotations.0.ranking: a ranking is required",
        "line 3: human_annotations.0.ranking: must list each response index 0..2 exactly once",
        "line 4: human_annotations.0.ranking: this project does not allow ties",
        "line 5: llm_annotations.0.labels: ranking projects answer with a ranking, not pairwise preferences",
        "line 5: llm_annotations.0.ranking: a ranking is required",
    ]
    assert not Item.objects.exists()


def test_unknown_labels_aspects_confidence_and_flags_are_each_named(project, write_jsonl, before):
    row = native(
        1,
        human_annotations=[
            {"annotator": "a", "labels": {"overall": "A-is-much-better"}},
            {"annotator": "b", "labels": {"style": "Tie"}, "confidence": {"overall": "very"}, "flags": ["nsfw"]},
            {"annotator": "c", "labels": {"overall": 2}},
        ],
        llm_annotations=[{"judge": "j", "labels": {"overall": "B"}}],
    )

    error = failing(project, write_jsonl([row]))

    likert = "A-is-clearly-better, A-is-slightly-better, Tie, B-is-slightly-better, B-is-clearly-better"
    assert error.errors == [
        f"line 1: human_annotations.0.preferences.overall: 'A-is-much-better' is not on the likert5 scale ({likert})",
        "line 1: human_annotations.1.preferences.style: unknown aspect (project aspects: "
        "overall, helpful, truthful, harmless)",
        "line 1: human_annotations.1.confidence.overall: 'very' is not one of "
        "absolutely-confident, fairly-confident, not-confident",
        "line 1: human_annotations.1.flags: 'nsfw' is not one of unsafe, broken-prompt, both-bad",
        f"line 1: human_annotations.2.preferences.overall: 2 is not on the likert5 scale ({likert})",
        f"line 1: llm_annotations.0.labels.overall: 'B' is not on the likert5 scale ({likert})",
    ]
    assert_nothing_written(before)


def test_a_strength7_project_refuses_text_and_out_of_range_labels(write_jsonl):
    project = ProjectFactory(scale="strength7")
    row = native(
        1,
        human_annotations=[
            {"annotator": "a", "labels": {"overall": "2"}},
            {"annotator": "b", "labels": {"overall": 4}},
        ],
    )

    error = failing(project, write_jsonl([row]))

    scale = "-3, -2, -1, 0, 1, 2, 3"
    assert error.errors == [
        f"line 1: human_annotations.0.preferences.overall: '2' is not on the strength7 scale ({scale})",
        f"line 1: human_annotations.1.preferences.overall: 4 is not on the strength7 scale ({scale})",
    ]
    assert not Item.objects.exists()


def test_an_annotation_without_any_label_is_refused(project, write_jsonl, before):
    error = failing(project, write_jsonl([native(1, human_annotations=[{"annotator": "a"}])]))

    assert error.errors == ["line 1: human_annotations.0.preferences: at least one preference is needed"]
    assert_nothing_written(before)


def test_a_tier_other_than_normal_or_expert_is_refused(project, write_jsonl, before):
    row = native(1, human_annotations=[{"annotator": "a", "tier": "guru", "labels": {"overall": "Tie"}}])

    error = failing(project, write_jsonl([row]))

    assert error.errors == ["line 1: human_annotations.0.tier: Input should be 'normal' or 'expert'"]
    assert_nothing_written(before)


# --- sizes and characters the database cannot hold ----------------------------------------------


def test_a_field_over_the_size_limit_is_named_with_its_size(project, write_jsonl, before, settings):
    settings.IMPORT_MAX_FIELD_CHARS = 50
    rows = [
        native(1),
        {**native(2), "prompt": "p" * 51},
        {**native(3), "responses": [{"text": "ok"}, {"text": "r" * 1234}]},
        {
            "id": "4",
            "conversation": [{"role": "user", "content": "c" * 60}],
            "responses": [{"text": "a"}, {"text": "b"}],
        },
        native(5, metadata={"blob": "m" * 60}),
        native(6, human_annotations=[{"annotator": "a", "labels": {"overall": "Tie"}, "justification": "j" * 51}]),
        native(7, llm_annotations=[{"judge": "j", "labels": {"overall": "Tie"}, "rationale": "r" * 51}]),
        {**native(8), "prompt": "p" * 50},
    ]

    error = failing(project, write_jsonl(rows))

    assert error.errors == [
        "line 2: prompt: 51 characters, over the limit of 50",
        "line 3: responses.1.text: 1,234 characters, over the limit of 50",
        "line 4: conversation.0.content: 60 characters, over the limit of 50",
        "line 5: metadata: over the limit of 50 characters",
        "line 6: human_annotations.0.justification: 51 characters, over the limit of 50",
        "line 7: llm_annotations.0.rationale: 51 characters, over the limit of 50",
    ]
    assert_nothing_written(before)


def test_an_id_longer_than_the_column_is_refused(project, write_jsonl, before):
    error = failing(project, write_jsonl([{**native(1), "id": "x" * 256}]))

    assert error.errors == ["line 1: id: longer than 255 characters"]
    assert_nothing_written(before)


@pytest.mark.parametrize("writer", ["copy", "orm"])
def test_nul_characters_and_nan_numbers_are_named_instead_of_failing_in_the_database(
    project, write_jsonl, before, writer
):
    nul = "contains a NUL character (\\u0000), which cannot be stored"
    rows = [
        native(1),
        {**native(2), "prompt": "nul \u0000 here"},
        native(3, metadata={"deep": {"list": ["ok", "bad\u0000"]}}),
        '{"id": "item-4", "prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "metadata": {"score": NaN}}',
        native(
            5,
            human_annotations=[{"annotator": "a", "labels": {"overall": "Tie"}, "own_reasons": {"overall": "\u0000"}}],
        ),
        native(6, llm_annotations=[{"judge": "j", "labels": {"overall": "Tie"}, "raw_output": "\u0000"}]),
        {**native(7), "id": "id\u0000"},
    ]

    error = failing(project, write_jsonl(rows), writer=writer)

    assert error.errors == [
        f"line 2: prompt: {nul}",
        f"line 3: metadata: {nul}",
        "line 4: metadata: nan is not a number JSON can hold",
        f"line 5: human_annotations.0.own_reasons.overall: {nul}",
        f"line 6: llm_annotations.0.raw_output: {nul}",
        f"line 7: id: {nul}",
    ]
    assert_nothing_written(before)


def test_an_unpaired_surrogate_escape_is_a_row_error_not_a_crash(project, write_jsonl, before):
    rows = [
        native(1),
        '{"id": "item-2", "prompt": "p", "responses": [{"text": "broken \\ud800 escape"}, {"text": "b"}]}',
    ]

    error = failing(project, write_jsonl(rows))

    assert len(error.errors) == 1
    assert error.errors[0].startswith("line 2: responses.0.text: contains an unpaired surrogate")
    assert_nothing_written(before)


@pytest.mark.parametrize("writer", ["copy", "orm"])
def test_values_longer_than_their_database_column_are_named_instead_of_failing_in_the_database(
    project, write_jsonl, before, writer
):
    rows = [
        native(1, responses=[{"text": "a", "model": "m" * 201}, {"text": "b", "model": "m" * 200}]),
        native(2, human_annotations=[{"annotator": "a" * 256, "labels": {"overall": "Tie"}}]),
        native(3, human_annotations=[{"annotator": "a", "labels": {"overall": "Tie"}, "timestamp": "t" * 65}]),
        native(4, llm_annotations=[{"judge": "j" * 201, "labels": {"overall": "Tie"}}]),
    ]

    error = failing(project, write_jsonl(rows), writer=writer)

    assert error.errors == [
        "line 1: responses.0.model: longer than 200 characters",
        "line 2: human_annotations.0.annotator: longer than 255 characters",
        "line 3: human_annotations.0.timestamp: longer than 64 characters",
        "line 4: llm_annotations.0.judge: longer than 200 characters",
    ]
    assert_nothing_written(before)


def test_the_checked_lengths_are_the_database_column_lengths():
    lengths = {
        "id": Item._meta.get_field("external_id").max_length,
        "model": Response._meta.get_field("model_name").max_length,
        "annotator": HumanAnnotation._meta.get_field("external_annotator").max_length,
        "timestamp": HumanAnnotation._meta.get_field("external_timestamp").max_length,
        "judge": Judge._meta.get_field("name").max_length,
    }
    assert lengths == COLUMN_LENGTHS


# --- unreadable files ---------------------------------------------------------------------------


def test_invalid_json_lines_are_named_and_reading_goes_on(project, write_jsonl, before):
    error = failing(project, write_jsonl([native(1), '{"id": "2", "prompt": ', native(3), "{'id': 4}"]))

    assert error.errors == [
        "line 2: invalid JSON (Expecting value at column 23)",
        "line 4: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
    ]
    assert_nothing_written(before)


def test_invalid_utf8_in_jsonl_names_the_line(project, write_jsonl, before):
    error = failing(project, write_jsonl([native(1), native(2), b'{"id": "3", "prompt": "caf\xe9"}']))

    assert len(error.errors) == 1
    assert error.errors[0].startswith("line 3: invalid UTF-8 at byte 26")
    assert "must be UTF-8 encoded" in error.errors[0]
    assert_nothing_written(before)


def test_invalid_utf8_in_csv_names_the_row(project, tmp_path, before):
    path = tmp_path / "items.csv"
    path.write_bytes(b"id,prompt,response_1,response_2\n1,a,x,y\n2,b,x,y\n3,caf\xe9,x,y\n4,d,x,y\n")

    error = failing(project, path)

    assert error.errors == ["row 4: invalid UTF-8 at byte 53 (the file must be UTF-8 encoded)"]
    assert_nothing_written(before)


def test_invalid_utf8_in_a_json_array_names_the_item(project, tmp_path, before):
    blob = json.dumps([native(1), native(2), native("X"), native(4)]).encode()
    bad_at = blob.index(b"X")
    path = tmp_path / "items.json"
    path.write_bytes(blob.replace(b"X", b"\xff"))

    error = failing(project, path)

    assert error.errors == [f"item 3: invalid UTF-8 at byte {bad_at} (the file must be UTF-8 encoded)"]
    assert_nothing_written(before)


def test_a_csv_row_with_too_many_cells_is_named(project, tmp_path, before):
    path = tmp_path / "items.csv"
    path.write_text("id,prompt,response_1,response_2\n1,a,x,y\n2,b,x,y,extra\n")

    error = failing(project, path)

    assert error.errors == ["row 3: has 5 cells, the header has 4"]
    assert_nothing_written(before)


def test_a_json_file_that_is_not_an_array_is_refused(project, tmp_path, before):
    path = tmp_path / "items.json"
    path.write_text(json.dumps(native(1)))

    error = failing(project, path)

    assert error.errors == ["item 1: a .json file must hold a JSON array of items ([{...}, {...}])"]
    assert_nothing_written(before)


def test_a_file_that_is_not_parquet_is_refused(project, tmp_path, before):
    path = tmp_path / "items.parquet"
    path.write_text("id,prompt\n")

    error = failing(project, path)

    assert len(error.errors) == 1
    assert error.errors[0].startswith("row 1: not a readable Parquet file")
    assert_nothing_written(before)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", b""),
        ("blank.jsonl", b"\n  \n\n"),
        ("empty.json", b""),
        ("empty-array.json", b"[]"),
        ("empty.csv", b""),
        ("header-only.csv", b"id,prompt,response_1,response_2\n"),
    ],
)
def test_an_empty_file_is_refused(project, tmp_path, before, name, content):
    path = tmp_path / name
    path.write_bytes(content)

    error = failing(project, path)

    assert error.errors == ["file: the file holds no items"]
    assert_nothing_written(before)


def test_an_empty_parquet_file_is_refused(project, tmp_path, before):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "prompt": pa.array([], pa.string())}), path)

    error = failing(project, path)

    assert error.errors == ["file: the file holds no items"]
    assert_nothing_written(before)


# --- formats and arguments ----------------------------------------------------------------------


def test_a_native_file_imported_as_multipref_says_what_multipref_needs(project, write_jsonl, before):
    error = failing(project, write_jsonl([native(1)]), fmt="multipref")

    assert error.errors == [
        "line 1: comparison_id: Field required",
        "line 1: text: Field required",
        "line 1: completion_a: Field required",
        "line 1: completion_b: Field required",
    ]
    assert_nothing_written(before)


def test_a_native_file_imported_as_helpsteer2_says_what_helpsteer2_needs(project, write_jsonl, before):
    error = failing(project, write_jsonl([native(1)]), fmt="helpsteer2-preference")

    assert error.errors == [
        "line 1: response_1: Field required",
        "line 1: response_2: Field required",
        "line 1: preference_strength: Field required",
    ]
    assert_nothing_written(before)


def test_a_multipref_file_imported_as_native_names_the_unknown_columns(project, write_jsonl, before):
    row = {"comparison_id": "c", "text": "t", "completion_a": "a", "completion_b": "b"}

    error = failing(project, write_jsonl([row]))

    extra = "unknown field (put extra keys under metadata)"
    assert error.errors == [
        "line 1: id: Field required",
        "line 1: responses: Field required",
        f"line 1: comparison_id: {extra}",
        f"line 1: text: {extra}",
        f"line 1: completion_a: {extra}",
        f"line 1: completion_b: {extra}",
    ]
    assert_nothing_written(before)


def test_an_unknown_format_name_is_refused_before_reading(project, write_jsonl, before):
    with pytest.raises(ValueError, match=r"unknown format 'alpaca' \(use one of native, multipref, "):
        import_file(project, write_jsonl([native(1)]), fmt="alpaca")
    assert_nothing_written(before)


def test_an_unknown_file_type_is_refused(project, tmp_path, before):
    path = tmp_path / "items.txt"
    path.write_text(json.dumps(native(1)))

    with pytest.raises(ValueError, match=r"cannot tell the file type of 'items\.txt'"):
        import_file(project, path)
    with pytest.raises(ValueError, match="unknown file type 'xml'"):
        import_file(project, path, file_type="xml")
    assert_nothing_written(before)


def test_an_explicit_file_type_reads_a_file_with_another_extension(project, tmp_path):
    path = tmp_path / "items.txt"
    path.write_text(json.dumps(native(1)) + "\n")

    assert import_file(project, path, file_type="jsonl").created == 1


def test_a_missing_file_is_refused(project, tmp_path, before):
    with pytest.raises(ValueError, match=r"no such file: .*nowhere\.jsonl"):
        import_file(project, tmp_path / "nowhere.jsonl")
    assert_nothing_written(before)


def test_unknown_top_level_keys_in_native_say_to_put_them_under_metadata(project, write_jsonl, before):
    row = {**native(1), "score": 0.5, "category": "math"}

    error = failing(project, write_jsonl([row]))

    assert error.errors == [
        "line 1: score: unknown field (put extra keys under metadata)",
        "line 1: category: unknown field (put extra keys under metadata)",
    ]
    assert_nothing_written(before)


def test_unknown_keys_inside_annotations_and_csv_columns_are_named(project, tmp_path, before):
    rows = [
        {
            "id": "1",
            "prompt": "p",
            "response_1": "a",
            "response_2": "b",
            "difficulty": "hard",
            "human_annotations": [{"annotator": "a", "labels": {"overall": "Tie"}, "mood": "happy"}],
        }
    ]

    error = failing(project, write_csv(tmp_path / "items.csv", rows))

    assert error.errors == [
        "row 2: human_annotations.0.mood: unknown field (put extra keys under metadata)",
        "row 2: difficulty: unknown field (put extra keys under metadata)",
    ]
    assert_nothing_written(before)


# --- dataset formats ----------------------------------------------------------------------------


def multipref_row(**extra: Any) -> dict[str, Any]:
    annotation = {"evaluator": "w1", "overall_pref": "Tie", "overall_confidence": "fairly-confident"}
    return {
        "comparison_id": "mp-1",
        "text": "prompt",
        "completion_a": "a",
        "completion_b": "b",
        "normal_worker_annotations": [annotation],
        "expert_worker_annotations": [],
        **extra,
    }


def test_a_bad_multipref_annotation_is_named_as_the_file_names_it(project, write_jsonl, before):
    row = multipref_row(
        normal_worker_annotations=[
            {"evaluator": "w1", "overall_pref": "Tie"},
            {"overall_pref": "Tie"},
        ],
        expert_worker_annotations=[
            {
                "evaluator": "e1",
                "overall_pref": "A-is-much-better",
                "helpful_confidence": "sure",
                "truthful_checked_reasons": [3],
                "time_spent": -5,
            },
            {"evaluator": "e1", "overall_pref": "Tie"},
        ],
    )

    error = failing(project, write_jsonl([row]), fmt="multipref")

    assert error.errors == ["line 1: normal_worker_annotations.1.evaluator: Field required"]
    del row["normal_worker_annotations"][1]
    error = failing(project, write_jsonl([row], name="second.jsonl"), fmt="multipref")
    assert error.errors == [
        "line 1: expert_worker_annotations.0.truthful_checked_reasons.0: Input should be a valid string",
        "line 1: expert_worker_annotations.0.time_spent: Input should be greater than or equal to 0",
        "line 1: expert_worker_annotations.1.evaluator: 'e1' appears twice for this item",
    ]
    assert_nothing_written(before)


def test_a_multipref_label_off_the_scale_names_the_source_column(project, write_jsonl, before):
    row = multipref_row(
        expert_worker_annotations=[
            {"evaluator": "e1", "overall_pref": "A-is-much-better", "helpful_pref": "Tie", "helpful_confidence": "sure"}
        ]
    )

    error = failing(project, write_jsonl([row]), fmt="multipref")

    likert = "A-is-clearly-better, A-is-slightly-better, Tie, B-is-slightly-better, B-is-clearly-better"
    assert error.errors == [
        f"line 1: expert_worker_annotations.0.overall_pref: 'A-is-much-better' is not on the likert5 scale ({likert})",
        "line 1: expert_worker_annotations.0.helpful_confidence: 'sure' is not one of "
        "absolutely-confident, fairly-confident, not-confident",
    ]
    assert_nothing_written(before)


def test_a_multipref_row_without_its_text_columns_is_refused(project, tmp_path, before):
    row = multipref_row()
    del row["completion_b"]
    row["text"] = ""

    error = failing(project, write_csv(tmp_path / "multipref.csv", [row]), fmt="multipref")

    assert error.errors == ["row 2: text: Field required", "row 2: completion_b: Field required"]
    assert_nothing_written(before)


@pytest.mark.parametrize(
    ("strength", "message"),
    [
        (4, "preference_strength: Input should be less than or equal to 3"),
        (-4, "preference_strength: Input should be greater than or equal to -3"),
        ("strong", "preference_strength: Input should be a valid integer, unable to parse string as an integer"),
        (1.5, "preference_strength: Input should be a valid integer, got a number with a fractional part"),
    ],
)
def test_a_helpsteer2_strength_off_the_scale_is_refused(project, write_jsonl, before, strength, message):
    row = {"prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": strength}

    error = failing(project, write_jsonl([row]), fmt="helpsteer2-preference")

    assert error.errors == [f"line 1: {message}"]
    assert_nothing_written(before)


def test_an_unknown_pandalm_verdict_from_a_human_is_refused(project, write_jsonl, before):
    row = {
        "id": "p-1",
        "instruction": "i",
        "response1": "a",
        "response2": "b",
        "human_labels": ["response1", "both", "tie"],
    }

    error = failing(project, write_jsonl([row]), fmt="pandalm")

    assert error.errors == ["line 1: human_labels.1: Input should be 'response1', 'response2' or 'tie'"]
    assert_nothing_written(before)


# --- many errors, and rollback of what was already written -------------------------------------


def test_only_the_first_fifty_problems_are_listed_but_all_are_counted(project, write_jsonl, before):
    rows = [{"id": f"bad-{i}", "prompt": "p"} for i in range(60)]

    error = failing(project, write_jsonl(rows))

    assert len(error.errors) == MAX_REPORTED_ERRORS == 50
    assert error.total == 60
    assert error.errors[0] == "line 1: responses: Field required"
    assert error.errors[-1] == "line 50: responses: Field required"
    assert str(error).startswith("60 problem(s) (showing the first 50); nothing was imported:\n")
    assert_nothing_written(before)


@pytest.mark.parametrize("writer", ["copy", "orm"])
@pytest.mark.parametrize("file_type", ["jsonl", "json", "csv", "parquet"])
def test_a_bad_row_after_batches_already_written_rolls_everything_back(
    project, tmp_path, before, settings, monkeypatch, writer, file_type
):
    settings.IMPORT_BATCH_SIZE = 3
    written: list[int] = []
    real_write = imports._write_batch

    def spy(project, batch, *args, **kwargs):
        written.append(len(batch))
        return real_write(project, batch, *args, **kwargs)

    monkeypatch.setattr(imports, "_write_batch", spy)
    rows = [annotated(i) for i in range(10)]
    rows.append({**annotated(10), "responses": [{"text": "only one"}]})
    path = tmp_path / f"items.{file_type}"
    if file_type == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        {"json": write_json, "csv": write_csv, "parquet": write_parquet}[file_type](path, rows)

    error = failing(project, path, writer=writer)

    where = {"jsonl": "line 11", "json": "item 11", "csv": "row 12", "parquet": "row 11"}[file_type]
    assert error.errors == [f"{where}: responses: a pairwise project needs exactly 2 responses, got 1"]
    assert written == [3, 3, 3]  # three batches reached the database before the bad row came
    assert_nothing_written(before)


def test_a_bad_row_after_an_update_in_an_earlier_batch_undoes_the_update(project, write_jsonl, before, settings):
    settings.IMPORT_BATCH_SIZE = 2
    rows = [
        annotated("old-1", prompt="Changed question?"),
        annotated("old-2"),
        annotated("new-1"),
        annotated("new-2"),
        {**annotated("new-3"), "prompt": ""},
    ]

    error = failing(project, write_jsonl(rows), update=True)

    assert error.errors == ["line 5: prompt: an item needs a prompt or a conversation"]
    assert Item.objects.get(external_id="item-old-1").prompt == "Question old-1?"
    assert_nothing_written(before)


def test_every_bad_row_is_reported_not_only_the_first(project, write_jsonl, before, settings):
    settings.IMPORT_BATCH_SIZE = 2
    rows = [native(1), {"id": "2"}, native(3), native(4), native(5), "not json", native(7), {**native(8), "x": 1}]

    error = failing(project, write_jsonl(rows))

    assert error.errors == [
        "line 2: responses: Field required",
        "line 6: invalid JSON (Expecting value at column 1)",
        "line 8: x: unknown field (put extra keys under metadata)",
    ]
    assert error.total == 3
    assert_nothing_written(before)


# --- updates that would change what platform annotators saw -------------------------------------


def test_update_refuses_to_change_responses_that_a_platform_annotator_labelled(project, write_jsonl, before, settings):
    settings.IMPORT_BATCH_SIZE = 2
    item = Item.objects.get(external_id="item-old-2")
    HumanAnnotation.objects.create(
        item=item, annotator=UserFactory(username="platform"), preferences={"overall": "Tie"}
    )
    state = {"counts": counts(), "contents": contents()}
    rows = [
        annotated("old-1", prompt="A changed prompt is fine on its own"),
        annotated("new-1"),
        {**annotated("old-2"), "responses": [{"text": "rewritten A"}, {"text": "rewritten B"}]},
    ]

    error = failing(project, write_jsonl(rows, name="update.jsonl"), update=True)

    assert error.errors == ["line 3: responses: changed, but item 'item-old-2' already has annotations or judgments"]
    assert error.total == 1
    assert_nothing_written(state)
    assert list(item.responses.values_list("text", flat=True)) == ["First answer to old-2.", "Second answer to old-2."]


def test_update_refuses_to_change_responses_that_a_platform_judge_judged(project, write_jsonl, before):
    item = Item.objects.get(external_id="item-old-1")
    judge = Judge.objects.create(name="live", backend=Judge.OPENAI, model="gpt-4o-mini")
    Judgment.objects.create(item=item, judge=judge, order="0-1", prompt_version="v1", status=Judgment.DONE)
    state = {"counts": counts(), "contents": contents()}
    changed = {**annotated("old-1"), "responses": [{"text": "new A"}, {"text": "First answer to old-1."}]}

    error = failing(project, write_jsonl([changed], name="update.jsonl"), update=True)

    assert error.errors == ["line 1: responses: changed, but item 'item-old-1' already has annotations or judgments"]
    assert_nothing_written(state)


def test_without_update_a_labelled_item_with_new_responses_is_only_reported(project, write_jsonl, before):
    item = Item.objects.get(external_id="item-old-2")
    HumanAnnotation.objects.create(
        item=item, annotator=UserFactory(username="platform"), preferences={"overall": "Tie"}
    )
    state = {"counts": counts(), "contents": contents()}
    changed = {**annotated("old-2"), "responses": [{"text": "x"}, {"text": "y"}]}

    result = import_file(project, write_jsonl([changed], name="again.jsonl"))

    assert result.changed_not_updated == ["item-old-2"]
    assert_nothing_written(state)

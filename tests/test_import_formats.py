"""Every import format and file type loads what it should, re-imports are idempotent, and both writers agree."""

from __future__ import annotations

import collections
import csv
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import PANDALM
from tests.factories import ProjectFactory, UserFactory
from webapp.models import HumanAnnotation, Item, Judge, Judgment, Response
from webapp.services import imports
from webapp.services.imports import ImportFailed, import_file

pytestmark = pytest.mark.django_db

HUMAN_FIELDS = (
    "external_annotator",
    "annotator_id",
    "tier",
    "preferences",
    "ranking",
    "ratings",
    "reasons",
    "own_reasons",
    "confidence",
    "justification",
    "time_spent",
    "flags",
    "imported",
    "external_timestamp",
)
JUDGMENT_FIELDS = (
    "judge__name",
    "judge__backend",
    "judge__model",
    "order",
    "prompt_version",
    "labels",
    "ranking",
    "rationale",
    "raw_output",
    "order_inconsistent",
    "status",
    "error",
)


# --- helpers ------------------------------------------------------------------------------------


def counts() -> dict[str, int]:
    return {m.__name__: m.objects.count() for m in (Item, Response, HumanAnnotation, Judgment, Judge)}


def snapshot(project: Any) -> list[dict[str, Any]]:
    """Everything an import wrote for a project, without ids and timestamps."""
    out = []
    for item in Item.objects.filter(project=project).order_by("external_id"):
        out.append(
            {
                "external_id": item.external_id,
                "prompt": item.prompt,
                "conversation": item.conversation,
                "metadata": item.metadata,
                "features": item.features,
                "route": item.route,
                "route_reason": item.route_reason,
                "status": item.status,
                "content_hash": item.content_hash,
                "responses": list(item.responses.order_by("position").values_list("position", "model_name", "text")),
                "human": list(item.human_annotations.order_by("external_annotator").values(*HUMAN_FIELDS)),
                "judgments": list(item.judgments.order_by("judge__name").values(*JUDGMENT_FIELDS)),
            }
        )
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One column per key (in first-seen order); dicts and lists go in as JSON text."""
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k not in header)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v for k, v in row.items()}
            )
    return path


def write_json(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def native(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"item-{i}",
        "prompt": f"Question {i}?",
        "responses": [
            {"text": f"First answer to {i}.", "model": "model-a"},
            {"text": f"Second answer to {i}.", "model": "model-b"},
        ],
        **extra,
    }


RICH = {
    "id": "rich-1",
    "prompt": "What is the capital of France?",
    "responses": [{"text": "Paris.", "model": "model-a"}, {"text": "Lyon.", "model": "model-b"}],
    "metadata": {"source": "unit-test", "difficulty": 2, "tags": ["geo", "easy"]},
    "human_annotations": [
        {
            "annotator": "ann-1",
            "tier": "expert",
            "labels": {"overall": "A-is-clearly-better", "truthful": "A-is-slightly-better"},
            "ratings": {"0": {"helpfulness": 4}, "1": {"helpfulness": 1}},
            "reasons": {"overall": ["more accurate"]},
            "own_reasons": {"overall": "Lyon is not the capital"},
            "confidence": {"overall": "fairly-confident"},
            "justification": "Paris has been the capital for centuries.",
            "time_spent": 12.5,
            "flags": ["both-bad"],
            "timestamp": "2024-05-01T10:00:00Z",
        },
        {"annotator": "ann-2", "labels": {"overall": "Tie"}},
    ],
    "llm_annotations": [
        {
            "judge": "imported-gpt-4o",
            "labels": {"overall": "A-is-clearly-better"},
            "rationale": "A names the right city.",
            "raw_output": "[[A]]",
            "order_inconsistent": False,
        }
    ],
}


@pytest.fixture
def rich_project():
    return ProjectFactory(slug="rich", rating_attributes=["helpfulness"])


def multipref_annotation(evaluator: str, overall: str = "B-is-slightly-better", **extra: Any) -> dict[str, Any]:
    return {
        "evaluator": evaluator,
        "overall_pref": overall,
        "overall_confidence": "fairly-confident",
        "overall_checked_reasons": ["more complete", "better structured"],
        "overall_own_reason": "",
        "helpful_pref": "B-is-clearly-better",
        "helpful_confidence": "absolutely-confident",
        "helpful_checked_reasons": [],
        "helpful_own_reason": "B mentions carbon dioxide",
        "truthful_pref": "Tie",
        "truthful_confidence": "not-confident",
        "truthful_checked_reasons": [],
        "truthful_own_reason": "",
        "harmless_pref": "Tie",
        "harmless_confidence": "absolutely-confident",
        "harmless_checked_reasons": [],
        "harmless_own_reason": "",
        "time_spent": 183,
        "timestamp": "2024-04-12 17:03:44.123456",
        **extra,
    }


def multipref_row(cid: str = "mp-1", **extra: Any) -> dict[str, Any]:
    return {
        "comparison_id": cid,
        "prompt_id": f"prompt-{cid}",
        "text": "Explain photosynthesis in one sentence.",
        "model_a": "allenai/tulu-2-70b",
        "completion_a": "Plants turn light into sugar.",
        "model_b": "gpt-4-turbo",
        "completion_b": "Plants use sunlight, water and carbon dioxide to make glucose and oxygen.",
        "source": "lmsys/chatbot_arena_conversations",
        "category": "Open QA",
        "subject_study": "Biology",
        "highest_level_degree": "Master's",
        "normal_worker_annotations": [
            multipref_annotation("worker-1"),
            multipref_annotation("worker-2", overall="A-is-slightly-better", time_spent=95),
        ],
        "expert_worker_annotations": [
            multipref_annotation("expert-1", overall="B-is-clearly-better", timestamp="2024-04-13 09:00:00"),
        ],
        **extra,
    }


def assert_multipref_loaded(project: Any, cid: str = "mp-1") -> None:
    item = Item.objects.get(project=project, external_id=cid)
    assert item.prompt == "Explain photosynthesis in one sentence."
    assert item.metadata == {
        "prompt_id": f"prompt-{cid}",
        "source": "lmsys/chatbot_arena_conversations",
        "category": "Open QA",
        "subject_study": "Biology",
        "highest_level_degree": "Master's",
    }
    assert list(item.responses.values_list("position", "model_name", "text")) == [
        (0, "allenai/tulu-2-70b", "Plants turn light into sugar."),
        (1, "gpt-4-turbo", "Plants use sunlight, water and carbon dioxide to make glucose and oxygen."),
    ]
    by_name = {a.external_annotator: a for a in item.human_annotations.all()}
    assert set(by_name) == {"worker-1", "worker-2", "expert-1"}
    assert {n: a.tier for n, a in by_name.items()} == {"worker-1": "normal", "worker-2": "normal", "expert-1": "expert"}
    assert all(a.imported and a.annotator_id is None for a in by_name.values())
    worker = by_name["worker-1"]
    assert worker.preferences == {
        "overall": "B-is-slightly-better",
        "helpful": "B-is-clearly-better",
        "truthful": "Tie",
        "harmless": "Tie",
    }
    assert worker.confidence == {
        "overall": "fairly-confident",
        "helpful": "absolutely-confident",
        "truthful": "not-confident",
        "harmless": "absolutely-confident",
    }
    # Empty checklists and empty free-text reasons are left out.
    assert worker.reasons == {"overall": ["more complete", "better structured"]}
    assert worker.own_reasons == {"helpful": "B mentions carbon dioxide"}
    assert worker.time_spent == 183
    assert worker.external_timestamp == "2024-04-12 17:03:44.123456"
    assert by_name["worker-2"].preferences["overall"] == "A-is-slightly-better"
    assert by_name["worker-2"].time_spent == 95
    assert by_name["expert-1"].preferences["overall"] == "B-is-clearly-better"
    assert by_name["expert-1"].external_timestamp == "2024-04-13 09:00:00"
    assert not item.judgments.exists()


def helpsteer2_row(strength: int = -2, **extra: Any) -> dict[str, Any]:
    return {
        "prompt": "Write a haiku about autumn.",
        "response_1": "Leaves drift slowly down / amber light on quiet paths / the year exhales cold",
        "response_2": "Autumn is a season.",
        "preference_strength": strength,
        "preference_statement": "@Response 1 is better than @Response 2 because it is a haiku.",
        "preference_elaboration": "Response 2 does not follow the 5-7-5 form at all.",
        "split": "train",
        **extra,
    }


# --- native -------------------------------------------------------------------------------------


def test_a_native_jsonl_file_loads_prompts_responses_and_metadata(project, write_jsonl):
    path = write_jsonl([native(1, metadata={"source": "s", "n": 1}), native(2), native(3)])

    result = import_file(project, path)

    assert (result.created, result.updated, result.unchanged, result.changed_not_updated) == (3, 0, 0, [])
    assert result.total == 3
    items = list(Item.objects.filter(project=project).order_by("external_id"))
    assert [i.external_id for i in items] == ["item-1", "item-2", "item-3"]
    first = items[0]
    assert first.prompt == "Question 1?"
    assert first.conversation is None
    assert first.metadata == {"source": "s", "n": 1}
    assert (first.route, first.status) == (Item.UNROUTED, Item.PENDING)
    assert len(first.content_hash) == 64
    assert list(first.responses.values_list("position", "model_name", "text")) == [
        (0, "model-a", "First answer to 1."),
        (1, "model-b", "Second answer to 1."),
    ]
    assert counts() == {"Item": 3, "Response": 6, "HumanAnnotation": 0, "Judgment": 0, "Judge": 0}


def test_integer_ids_are_stored_as_text(project, write_jsonl):
    import_file(project, write_jsonl([{**native(1), "id": 17}]))
    assert Item.objects.get(project=project).external_id == "17"


def test_a_multi_turn_conversation_is_stored_as_the_items_context(project, write_jsonl):
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7."},
        {"role": "user", "content": "Another one?"},
    ]
    row = {"id": "conv-1", "conversation": conversation, "responses": [{"text": "11."}, {"text": "Nine."}]}

    import_file(project, write_jsonl([row]))

    item = Item.objects.get(project=project, external_id="conv-1")
    assert item.prompt == ""
    assert item.conversation == conversation
    assert list(item.responses.values_list("text", flat=True)) == ["11.", "Nine."]


def test_human_annotations_are_stored_as_imported_annotations_of_their_external_annotator(rich_project, write_jsonl):
    import_file(rich_project, write_jsonl([RICH]))

    item = Item.objects.get(project=rich_project)
    first, second = item.human_annotations.order_by("external_annotator")
    assert first.annotator is None
    assert first.imported is True
    assert first.external_annotator == "ann-1"
    assert first.tier == "expert"
    assert first.preferences == {"overall": "A-is-clearly-better", "truthful": "A-is-slightly-better"}
    assert first.ratings == {"0": {"helpfulness": 4}, "1": {"helpfulness": 1}}
    assert first.reasons == {"overall": ["more accurate"]}
    assert first.own_reasons == {"overall": "Lyon is not the capital"}
    assert first.confidence == {"overall": "fairly-confident"}
    assert first.justification == "Paris has been the capital for centuries."
    assert first.time_spent == 12.5
    assert first.flags == ["both-bad"]
    assert first.external_timestamp == "2024-05-01T10:00:00Z"
    assert first.ranking is None
    assert first.payload()["ratings"] == {0: {"helpfulness": 4}, 1: {"helpfulness": 1}}
    # Unset fields take their defaults.
    assert (second.external_annotator, second.tier, second.preferences) == ("ann-2", "normal", {"overall": "Tie"})
    assert (second.justification, second.time_spent, second.flags, second.external_timestamp) == ("", None, [], "")


def test_llm_annotations_become_finished_judgments_of_an_external_judge(rich_project, write_jsonl):
    import_file(rich_project, write_jsonl([RICH]))

    judge = Judge.objects.get(name="imported-gpt-4o")
    assert (judge.backend, judge.model) == (Judge.EXTERNAL, "imported-gpt-4o")
    judgment = Judgment.objects.get(item__project=rich_project)
    assert judgment.judge == judge
    assert judgment.order == "combined"
    assert judgment.prompt_version == "imported"
    assert judgment.status == Judgment.DONE
    assert judgment.labels == {"overall": "A-is-clearly-better"}
    assert judgment.rationale == "A names the right city."
    assert judgment.raw_output == "[[A]]"
    assert judgment.order_inconsistent is False
    assert judgment.error == ""


def test_an_existing_judge_of_the_same_name_is_reused(project, write_jsonl):
    existing = Judge.objects.create(name="shared-judge", backend=Judge.OPENAI, model="gpt-4o-mini")
    rows = [native(i, llm_annotations=[{"judge": "shared-judge", "labels": {"overall": "Tie"}}]) for i in range(3)]

    import_file(project, write_jsonl(rows))

    assert Judge.objects.filter(name="shared-judge").count() == 1
    assert set(Judgment.objects.values_list("judge_id", flat=True)) == {existing.pk}


@pytest.mark.parametrize("file_type", ["json", "csv", "parquet"])
def test_json_csv_and_parquet_files_load_exactly_what_the_same_jsonl_loads(file_type, tmp_path, write_jsonl):
    rows = [RICH, native(2, metadata={"source": "other", "difficulty": 5, "tags": []}), native(3)]
    from_jsonl = ProjectFactory(slug="from-jsonl", rating_attributes=["helpfulness"])
    other = ProjectFactory(slug=f"from-{file_type}", rating_attributes=["helpfulness"])
    writers = {"json": write_json, "csv": write_csv, "parquet": write_parquet}
    path = writers[file_type](tmp_path / f"items.{file_type}", rows)

    import_file(from_jsonl, write_jsonl(rows))
    result = import_file(other, path)

    assert result.created == 3
    assert snapshot(other) == snapshot(from_jsonl)


def test_a_csv_file_with_flat_response_and_metadata_columns_loads(project, tmp_path):
    rows = [
        {
            "id": "csv-1",
            "prompt": "Say hi, politely.",
            "response_1": "Hello there!",
            "model_1": "model-a",
            "response_2": 'Hi, "friend",\nhow are you?',
            "model_2": "model-b",
            "metadata.source": "survey",
            "metadata.lang": "en",
        },
        {"id": "csv-2", "prompt": "Say bye.", "response_1": "Bye.", "response_2": "Farewell.", "metadata.lang": "fr"},
    ]

    result = import_file(project, write_csv(tmp_path / "items.csv", rows))

    assert result.created == 2
    first = Item.objects.get(project=project, external_id="csv-1")
    assert first.prompt == "Say hi, politely."
    assert first.metadata == {"source": "survey", "lang": "en"}
    assert list(first.responses.values_list("position", "model_name", "text")) == [
        (0, "model-a", "Hello there!"),
        (1, "model-b", 'Hi, "friend",\nhow are you?'),
    ]
    second = Item.objects.get(project=project, external_id="csv-2")
    assert second.metadata == {"lang": "fr"}
    assert list(second.responses.values_list("model_name", "text")) == [("", "Bye."), ("", "Farewell.")]


def test_a_csv_file_with_json_in_its_cells_loads_conversations_and_annotations(project, tmp_path):
    row = {
        "id": "csv-json-1",
        "conversation": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Joke?"},
        ],
        "responses": [{"text": "Knock knock.", "model": "m1"}, {"text": "No.", "model": "m2"}],
        "metadata": {"topic": "humour", "turns": 3},
        "metadata.batch": "b7",
        "human_annotations": [{"annotator": "csv-ann", "labels": {"overall": "A-is-clearly-better"}, "time_spent": 4}],
        "llm_annotations": [{"judge": "csv-judge", "labels": {"helpful": "A-is-slightly-better"}}],
    }

    import_file(project, write_csv(tmp_path / "items.csv", [row]))

    item = Item.objects.get(project=project)
    assert item.conversation == row["conversation"]
    assert item.metadata == {"topic": "humour", "turns": 3, "batch": "b7"}
    assert list(item.responses.values_list("model_name", "text")) == [("m1", "Knock knock."), ("m2", "No.")]
    annotation = item.human_annotations.get()
    assert (annotation.external_annotator, annotation.preferences, annotation.time_spent) == (
        "csv-ann",
        {"overall": "A-is-clearly-better"},
        4,
    )
    assert item.judgments.get().labels == {"helpful": "A-is-slightly-better"}


def test_csv_text_cells_that_look_like_json_stay_text(project, tmp_path):
    rows = [
        {"id": "j-1", "prompt": '{"name": "Ada", "born": 1815}', "response_1": "[1, 2, 3]", "response_2": "{}"},
        {"id": "j-2", "prompt": "[1, 2, 3]", "response_1": "ok", "response_2": "fine"},
    ]

    import_file(project, write_csv(tmp_path / "items.csv", rows))

    assert dict(Item.objects.filter(project=project).values_list("external_id", "prompt")) == {
        "j-1": '{"name": "Ada", "born": 1815}',
        "j-2": "[1, 2, 3]",
    }
    assert list(Response.objects.filter(item__external_id="j-1").values_list("text", flat=True)) == ["[1, 2, 3]", "{}"]


def test_parquet_annotations_may_differ_in_which_fields_they_fill(project, tmp_path):
    row = native(
        1,
        human_annotations=[
            {"annotator": "a", "labels": {"overall": "Tie", "helpful": "A-is-slightly-better"}, "justification": "why"},
            {"annotator": "b", "labels": {"overall": "B-is-clearly-better"}, "time_spent": 3.5},
        ],
    )

    import_file(project, write_parquet(tmp_path / "items.parquet", [row]))

    a, b = HumanAnnotation.objects.order_by("external_annotator")
    assert (a.preferences, a.justification, a.time_spent) == (
        {"overall": "Tie", "helpful": "A-is-slightly-better"},
        "why",
        None,
    )
    assert (b.preferences, b.justification, b.time_spent) == ({"overall": "B-is-clearly-better"}, "", 3.5)


def test_a_ranking_project_takes_three_responses_and_a_ranking(write_jsonl):
    project = ProjectFactory(kind="ranking", aspects=["overall"])
    row = {
        "id": "rank-1",
        "prompt": "Sort these answers.",
        "responses": [{"text": "good", "model": "m0"}, {"text": "bad", "model": "m1"}, {"text": "best", "model": "m2"}],
        "human_annotations": [{"annotator": "r1", "ranking": [2, 0, 1]}],
        "llm_annotations": [{"judge": "ranker", "ranking": [2, 1, 0]}],
    }

    import_file(project, write_jsonl([row]))

    item = Item.objects.get(project=project)
    assert list(item.responses.values_list("position", "text")) == [(0, "good"), (1, "bad"), (2, "best")]
    annotation = item.human_annotations.get()
    assert (annotation.ranking, annotation.preferences) == ([2, 0, 1], {})
    judgment = item.judgments.get()
    assert (judgment.ranking, judgment.labels, judgment.status) == ([2, 1, 0], {}, Judgment.DONE)


def test_a_ranking_project_that_allows_ties_keeps_tied_groups(write_jsonl):
    project = ProjectFactory(kind="ranking", aspects=["overall"], allow_ties=True)
    row = {
        "id": "rank-ties",
        "prompt": "Sort.",
        "responses": [{"text": "a"}, {"text": "b"}, {"text": "c"}],
        "human_annotations": [{"annotator": "r1", "ranking": [[0, 2], 1]}],
    }

    import_file(project, write_jsonl([row]))

    assert HumanAnnotation.objects.get().ranking == [[0, 2], 1]


def test_a_strength7_project_takes_integer_labels(write_jsonl):
    project = ProjectFactory(scale="strength7")
    row = native(
        1,
        human_annotations=[{"annotator": "s1", "labels": {"overall": -3, "helpful": 0, "harmless": 2}}],
        llm_annotations=[{"judge": "strength-judge", "labels": {"overall": 1}}],
    )

    import_file(project, write_jsonl([row]))

    assert HumanAnnotation.objects.get().preferences == {"overall": -3, "helpful": 0, "harmless": 2}
    assert Judgment.objects.get().labels == {"overall": 1}


# --- MultiPref ----------------------------------------------------------------------------------


def test_multipref_jsonl_loads_tiers_aspects_confidence_reasons_and_timestamps(project, write_jsonl):
    result = import_file(project, write_jsonl([multipref_row("mp-1"), multipref_row("mp-2")]), fmt="multipref")

    assert result.created == 2
    assert_multipref_loaded(project, "mp-1")
    assert_multipref_loaded(project, "mp-2")
    assert counts() == {"Item": 2, "Response": 4, "HumanAnnotation": 6, "Judgment": 0, "Judge": 0}


def test_multipref_parquet_with_nested_lists_of_structs_loads(project, tmp_path):
    path = write_parquet(tmp_path / "multipref.parquet", [multipref_row("mp-1"), multipref_row("mp-2")])
    schema = pq.read_schema(path)
    assert pa.types.is_list(schema.field("normal_worker_annotations").type)
    assert pa.types.is_struct(schema.field("normal_worker_annotations").type.value_type)

    result = import_file(project, path, fmt="multipref")

    assert result.created == 2
    assert_multipref_loaded(project, "mp-1")
    assert_multipref_loaded(project, "mp-2")


def test_multipref_csv_with_json_in_the_annotation_cells_loads(project, tmp_path):
    path = write_csv(tmp_path / "multipref.csv", [multipref_row("mp-1")])

    import_file(project, path, fmt="multipref")

    assert_multipref_loaded(project, "mp-1")


def test_multipref_csv_completions_that_look_like_json_stay_text(project, tmp_path):
    row = multipref_row("mp-json", completion_a='{"answer": 42}', completion_b="[1, 2]", text='{"q": "?"}')

    import_file(project, write_csv(tmp_path / "multipref.csv", [row]), fmt="multipref")

    item = Item.objects.get(project=project)
    assert item.prompt == '{"q": "?"}'
    assert list(item.responses.values_list("text", flat=True)) == ['{"answer": 42}', "[1, 2]"]


def test_multipref_rows_without_annotations_load_as_bare_items(project, write_jsonl):
    row = multipref_row("bare", normal_worker_annotations=[], expert_worker_annotations=[])

    import_file(project, write_jsonl([row]), fmt="multipref")

    assert Item.objects.filter(project=project, external_id="bare").exists()
    assert not HumanAnnotation.objects.exists()


# --- HelpSteer2-Preference ----------------------------------------------------------------------


def test_helpsteer2_into_a_strength7_project_keeps_the_strength_as_the_label(write_jsonl):
    project = ProjectFactory(scale="strength7")

    import_file(project, write_jsonl([helpsteer2_row(-2)]), fmt="helpsteer2-preference")

    item = Item.objects.get(project=project)
    assert re.fullmatch(r"hs2-[0-9a-f]{16}", item.external_id)
    assert item.prompt == "Write a haiku about autumn."
    assert item.metadata == {"split": "train"}
    assert list(item.responses.values_list("text", flat=True)) == [
        "Leaves drift slowly down / amber light on quiet paths / the year exhales cold",
        "Autumn is a season.",
    ]
    annotation = item.human_annotations.get()
    assert annotation.external_annotator == "helpsteer2"
    assert annotation.imported is True
    assert annotation.preferences == {"overall": -2}
    assert annotation.own_reasons == {"overall": "@Response 1 is better than @Response 2 because it is a haiku."}
    assert annotation.justification == "Response 2 does not follow the 5-7-5 form at all."


@pytest.mark.parametrize(
    ("strength", "label"),
    [
        (-3, "A-is-clearly-better"),
        (-2, "A-is-clearly-better"),
        (-1, "A-is-slightly-better"),
        (0, "Tie"),
        (1, "B-is-slightly-better"),
        (2, "B-is-clearly-better"),
        (3, "B-is-clearly-better"),
    ],
)
def test_helpsteer2_into_a_likert5_project_folds_the_strength(project, write_jsonl, strength, label):
    import_file(project, write_jsonl([helpsteer2_row(strength)]), fmt="helpsteer2-preference")

    assert HumanAnnotation.objects.get(item__project=project).preferences == {"overall": label}


def test_helpsteer2_rows_without_an_id_get_the_same_id_on_every_import(project, write_jsonl):
    rows = [helpsteer2_row(1), helpsteer2_row(1, prompt="Write a haiku about winter.")]
    path = write_jsonl(rows)

    import_file(project, path, fmt="helpsteer2-preference")
    ids = sorted(Item.objects.values_list("external_id", flat=True))
    again = import_file(project, path, fmt="helpsteer2-preference")

    assert len(set(ids)) == 2
    assert sorted(Item.objects.values_list("external_id", flat=True)) == ids
    assert (again.created, again.unchanged) == (0, 2)


def test_a_helpsteer2_id_column_is_used_when_present(project, tmp_path):
    path = write_csv(tmp_path / "hs2.csv", [helpsteer2_row(3, id="hs-row-9")])

    import_file(project, path, fmt="helpsteer2-preference")

    item = Item.objects.get(project=project)
    assert item.external_id == "hs-row-9"
    assert item.human_annotations.get().preferences == {"overall": "B-is-clearly-better"}


# --- PandaLM ------------------------------------------------------------------------------------


def test_the_shipped_pandalm_file_loads_with_its_human_and_llm_labels(project):
    source = [json.loads(line) for line in PANDALM.read_text(encoding="utf-8").splitlines() if line.strip()]
    unparsed = sum(1 for r in source for v in r["llm_labels"].values() if v.startswith("unparsed:"))
    assert unparsed > 0

    result = import_file(project, PANDALM, fmt="pandalm")

    assert result.created == 999
    assert counts() == {"Item": 999, "Response": 1998, "HumanAnnotation": 2997, "Judgment": 1998, "Judge": 2}
    assert set(Judge.objects.values_list("name", "backend")) == {
        ("gpt-3.5-turbo", Judge.EXTERNAL),
        ("pandalm-7b", Judge.EXTERNAL),
    }
    failed = Judgment.objects.filter(status=Judgment.FAILED)
    assert failed.count() == unparsed
    assert all(j.labels == {} and j.raw_output.startswith("unparsed:") and j.error for j in failed)
    assert Judgment.objects.filter(status=Judgment.DONE).count() == 1998 - unparsed
    assert not HumanAnnotation.objects.exclude(imported=True).exists()
    assert set(HumanAnnotation.objects.values_list("external_annotator", flat=True)) == {
        "pandalm-annotator1",
        "pandalm-annotator2",
        "pandalm-annotator3",
    }

    # A few answers are JSON booleans in the source: they are kept as text.
    bools = [(r["id"], str(r["response1"])) for r in source if isinstance(r["response1"], bool)]
    assert bools
    for external_id, text in bools:
        assert Response.objects.get(item__external_id=external_id, position=0).text == text

    first = Item.objects.get(project=project, external_id="pandalm-0")
    assert first.prompt.startswith("The sentence you are given might be too wordy")
    assert first.prompt.endswith(
        "\n\nIf you have any questions about my rate or if you find it necessary to "
        "increase or decrease the scope for this project, please let me know."
    )
    assert first.metadata["motivation_app"] == "Grammarly"
    assert first.metadata["human_majority"] == "response2"
    assert list(first.responses.values_list("model_name", flat=True)) == ["bloom-7b", "llama-7b"]


def test_the_pandalm_human_majorities_match_the_ones_its_readme_states(project):
    readme = (PANDALM.parent / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"Human majority: response1 (\d+), response2 (\d+), tie (\d+)", readme)
    assert stated
    expected = {"response1": int(stated[1]), "response2": int(stated[2]), "tie": int(stated[3])}
    import_file(project, PANDALM, fmt="pandalm")

    verdict = {"A-is-clearly-better": "response1", "B-is-clearly-better": "response2", "Tie": "tie"}
    labels: dict[int, list[str]] = collections.defaultdict(list)
    for item_id, preferences in HumanAnnotation.objects.values_list("item_id", "preferences"):
        labels[item_id].append(verdict[preferences["overall"]])
    majorities = collections.Counter()
    for votes in labels.values():
        ((label, n),) = collections.Counter(votes).most_common(1)
        assert n >= 2
        majorities[label] += 1

    assert dict(majorities) == expected


def test_pandalm_into_a_strength7_project_uses_plus_or_minus_two(tmp_path, write_jsonl):
    project = ProjectFactory(scale="strength7")
    row = {
        "id": "p-1",
        "instruction": "Add the numbers.",
        "input": "",
        "response1": "3",
        "response2": True,
        "human_labels": ["response1", "tie", "response2"],
        "llm_labels": {"judge-x": "response2", "judge-y": "unparsed:garbage"},
        "llm_reasons": {"judge-x": "2 is right"},
    }

    import_file(project, write_jsonl([row]), fmt="pandalm")

    item = Item.objects.get(project=project)
    assert item.prompt == "Add the numbers."
    assert list(item.responses.values_list("text", flat=True)) == ["3", "True"]
    assert sorted(item.human_annotations.values_list("external_annotator", "preferences")) == [
        ("pandalm-annotator1", {"overall": -2}),
        ("pandalm-annotator2", {"overall": 0}),
        ("pandalm-annotator3", {"overall": 2}),
    ]
    done = item.judgments.get(judge__name="judge-x")
    assert (done.labels, done.rationale, done.status) == ({"overall": 2}, "2 is right", Judgment.DONE)
    failed = item.judgments.get(judge__name="judge-y")
    assert (failed.labels, failed.raw_output, failed.status) == ({}, "unparsed:garbage", Judgment.FAILED)


# --- re-imports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["copy", "orm"])
def test_reimporting_the_same_file_changes_nothing(rich_project, write_jsonl, writer):
    path = write_jsonl([RICH, native(2), native(3)])
    import_file(rich_project, path, writer=writer)
    before_counts, before = counts(), snapshot(rich_project)
    before_ids = dict(Item.objects.values_list("external_id", "pk"))

    result = import_file(rich_project, path, writer=writer)

    assert (result.created, result.updated, result.unchanged, result.changed_not_updated) == (0, 0, 3, [])
    assert counts() == before_counts
    assert snapshot(rich_project) == before
    assert dict(Item.objects.values_list("external_id", "pk")) == before_ids


@pytest.mark.parametrize("fmt_and_rows", ["multipref", "helpsteer2-preference"])
def test_reimporting_a_dataset_format_is_idempotent_too(project, write_jsonl, fmt_and_rows):
    rows = [multipref_row("a"), multipref_row("b")] if fmt_and_rows == "multipref" else [helpsteer2_row(1)]
    path = write_jsonl(rows)
    import_file(project, path, fmt=fmt_and_rows)
    before = counts()

    result = import_file(project, path, fmt=fmt_and_rows)

    assert (result.created, result.unchanged) == (0, len(rows))
    assert counts() == before


def test_a_changed_item_is_left_alone_without_update_and_reported(project, write_jsonl):
    import_file(project, write_jsonl([native(1), native(2), native(3)]))
    before = Item.objects.get(external_id="item-2")
    changed = [native(1), {**native(2), "prompt": "A new question?"}, native(3), native(4)]

    result = import_file(project, write_jsonl(changed, name="v2.jsonl"))

    assert (result.created, result.updated, result.unchanged) == (1, 0, 2)
    assert result.changed_not_updated == ["item-2"]
    assert result.total == 4
    after = Item.objects.get(external_id="item-2")
    assert (after.prompt, after.content_hash) == ("Question 2?", before.content_hash)
    assert Item.objects.filter(project=project).count() == 4


@pytest.mark.parametrize("writer", ["copy", "orm"])
def test_update_rewrites_the_prompt_responses_and_imported_labels(rich_project, write_jsonl, writer):
    import_file(rich_project, write_jsonl([RICH, native(2)]), writer=writer)
    item = Item.objects.get(external_id="rich-1")
    old_hash = item.content_hash
    new = {
        **RICH,
        "prompt": "What is the capital of Italy?",
        "responses": [{"text": "Rome.", "model": "model-c"}, {"text": "Milan.", "model": "model-d"}],
        "metadata": {"source": "v2"},
        "human_annotations": [{"annotator": "ann-9", "labels": {"overall": "A-is-slightly-better"}}],
        "llm_annotations": [{"judge": "imported-gpt-4o", "labels": {"overall": "Tie"}, "rationale": "both fine"}],
    }

    result = import_file(rich_project, write_jsonl([new, native(2)], name="v2.jsonl"), update=True, writer=writer)

    assert (result.created, result.updated, result.unchanged, result.changed_not_updated) == (0, 1, 1, [])
    item.refresh_from_db()
    assert item.pk == Item.objects.get(external_id="rich-1").pk
    assert item.prompt == "What is the capital of Italy?"
    assert item.metadata == {"source": "v2"}
    assert item.content_hash != old_hash
    assert list(item.responses.values_list("position", "model_name", "text")) == [
        (0, "model-c", "Rome."),
        (1, "model-d", "Milan."),
    ]
    assert list(item.human_annotations.values_list("external_annotator", "preferences")) == [
        ("ann-9", {"overall": "A-is-slightly-better"})
    ]
    assert list(item.judgments.values_list("labels", "rationale")) == [({"overall": "Tie"}, "both fine")]
    # Updating again with the same file is a no-op.
    again = import_file(rich_project, write_jsonl([new, native(2)], name="v2.jsonl"), update=True, writer=writer)
    assert (again.updated, again.unchanged) == (0, 2)


def test_update_keeps_platform_annotations_and_judgments_when_the_responses_stay_the_same(project, write_jsonl):
    import_file(project, write_jsonl([native(1)]))
    item = Item.objects.get()
    user = UserFactory(username="platform-annotator")
    mine = HumanAnnotation.objects.create(item=item, annotator=user, preferences={"overall": "Tie"})
    judge = Judge.objects.create(name="live-judge", backend=Judge.OPENAI, model="gpt-4o-mini")
    live = Judgment.objects.create(item=item, judge=judge, order="0-1", prompt_version="v1", status=Judgment.DONE)

    result = import_file(project, write_jsonl([native(1, prompt="Reworded question?")], name="v2.jsonl"), update=True)

    assert result.updated == 1
    item.refresh_from_db()
    assert item.prompt == "Reworded question?"
    assert HumanAnnotation.objects.filter(pk=mine.pk).exists()
    assert Judgment.objects.filter(pk=live.pk).exists()


# --- the two writers ----------------------------------------------------------------------------


TRICKY = {
    "id": "tricky\t1",
    "prompt": "Tabs\there, newlines\nthere, a backslash \\ and \\N, quotes \"', and ünïcødé 🌍",
    "conversation": [{"role": "user", "content": "First\r\nturn\\N"}, {"role": "user", "content": "\\."}],
    "responses": [{"text": "\\N", "model": "m\t0"}, {"text": "", "model": ""}],
    "metadata": {"nested": {"list": [1, 2.5, None, True], "text": "a\\b\tc\n"}, "empty": {}, "ü": "ß"},
    "human_annotations": [
        {
            "annotator": "ann\\1",
            "labels": {"overall": "Tie"},
            "justification": "multi\nline\\",
            "timestamp": "2024-01-01",
        }
    ],
    "llm_annotations": [{"judge": "copy-judge", "labels": {"overall": "Tie"}, "raw_output": "\x07bell\\"}],
}


def test_the_copy_and_orm_writers_write_identical_rows(write_jsonl):
    rows = [RICH, TRICKY, *(native(i) for i in range(2, 8))]
    path = write_jsonl(rows)
    by_copy = ProjectFactory(slug="by-copy", rating_attributes=["helpfulness"])
    by_orm = ProjectFactory(slug="by-orm", rating_attributes=["helpfulness"])

    import_file(by_copy, path, writer="copy")
    import_file(by_orm, path, writer="orm")

    copied, inserted = snapshot(by_copy), snapshot(by_orm)
    assert len(copied) == len(rows)
    assert copied == inserted
    tricky = next(i for i in copied if i["external_id"] == "tricky\t1")
    assert tricky["prompt"] == TRICKY["prompt"]
    assert tricky["conversation"] == TRICKY["conversation"]
    assert tricky["metadata"] == TRICKY["metadata"]
    assert tricky["responses"] == [(0, "m\t0", "\\N"), (1, "", "")]


def test_the_copy_and_orm_writers_agree_on_pandalm_failed_judgments(write_jsonl):
    row = {
        "id": "p-1",
        "instruction": "Pick one.",
        "input": "a or b",
        "response1": "a",
        "response2": "b",
        "human_labels": ["tie", "tie", "response1"],
        "llm_labels": {"j-ok": "response1", "j-bad": "unparsed:garbage"},
    }
    path = write_jsonl([row])
    by_copy, by_orm = ProjectFactory(slug="p-copy"), ProjectFactory(slug="p-orm")

    import_file(by_copy, path, fmt="pandalm", writer="copy")
    import_file(by_orm, path, fmt="pandalm", writer="orm")

    assert snapshot(by_copy) == snapshot(by_orm)


def test_the_default_writer_uses_copy_on_postgresql(project, write_jsonl, monkeypatch):
    tables: list[str] = []
    real_copy = imports._copy

    def spy(model, columns, rows, **kwargs):
        tables.append(model._meta.db_table)
        return real_copy(model, columns, rows, **kwargs)

    monkeypatch.setattr(imports, "_copy", spy)
    import_file(project, write_jsonl([native(1)]))

    assert sorted(tables) == sorted([Item._meta.db_table, Response._meta.db_table])
    assert Item.objects.filter(project=project).count() == 1


def test_the_orm_writer_does_not_use_copy(project, write_jsonl, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("COPY used")

    monkeypatch.setattr(imports, "_copy", fail)
    import_file(project, write_jsonl([native(1)]), writer="orm")

    assert Response.objects.filter(item__project=project).count() == 2


def test_imported_rows_pass_the_database_constraints_of_a_second_project_with_the_same_ids(project, write_jsonl):
    other = ProjectFactory(slug="other")
    path = write_jsonl([native(1), native(2)])

    import_file(project, path)
    result = import_file(other, path)

    assert result.created == 2
    assert Item.objects.filter(external_id="item-1").count() == 2


def test_ratings_are_refused_by_a_project_that_asks_for_none(project, write_jsonl):
    with pytest.raises(ImportFailed, match=r"ratings\.0\.helpfulness: not a rating attribute of this project"):
        import_file(project, write_jsonl([RICH]))

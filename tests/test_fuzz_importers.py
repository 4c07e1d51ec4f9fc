"""Fuzzing the importers with hypothesis: JSONL, CSV and Parquet files of valid-ish rows (random field types,
unicode with NULs and lone surrogates, missing and unknown keys, huge and non-finite numbers, nesting)
and of garbage, in each import format.

Each generated file goes through webapp.services.imports.validate_file (the upload page's check) and
import_file (what the worker and `manage.py import_items` run, writing with COPY into PostgreSQL).
Whatever the file, the only outcomes allowed are:
- success, and then the validation found no problem and import created what it counted as new; or
- the project's own validation errors: ImportFailed from import_file, the same problems in validate_file's
  report, each naming the row ("line 3", "row 2", "item 1", or "file") and a message.
Never another exception. The readers alone also take random bytes. About 200 examples per file type,
no deadline: a minute at most.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.factories import ProjectFactory
from webapp.importing.formats import FORMATS
from webapp.importing.readers import ReadError, read_rows
from webapp.models import Item, Project
from webapp.services.imports import ImportFailed, import_file, validate_file

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis directory in the tree; a failure prints its example and seed
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
WHERE = re.compile(r"^(?:(?:line|row|item) \d+|file)$")
LABELS = ["A-is-clearly-better", "A-is-slightly-better", "Tie", "B-is-slightly-better", "B-is-clearly-better"]

# --- values -----------------------------------------------------------------------------------------------

# Any character, NUL and lone surrogates (as JSON's \ud800 escapes make them) included.
any_text = st.text(max_size=24)
# What UTF-8 can hold (CSV and Parquet cells): no lone surrogates.
utf8_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**40, int("9" * 4000)]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=8,
)
texty = st.one_of(any_text, st.sampled_from(["", " ", "Which answer is better?", "x" * 300]), json_values)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, json_values)


# --- rows -------------------------------------------------------------------------------------------------

turn = st.fixed_dictionaries(
    {"role": maybe(st.sampled_from(["user", "assistant", "system", "bot"])), "content": texty},
    optional={"name": json_values},
)
response = st.fixed_dictionaries({}, optional={"text": texty, "model": maybe(any_text), "score": json_values})
human = st.fixed_dictionaries(
    {"annotator": maybe(any_text)},
    optional={
        "tier": maybe(st.sampled_from(["normal", "expert", "guru"])),
        "labels": maybe(st.dictionaries(st.sampled_from(["overall", "helpful", "x"]), maybe(st.sampled_from(LABELS)))),
        "ranking": json_values,
        "ratings": json_values,
        "reasons": json_values,
        "justification": texty,
        "time_spent": maybe(numbers),
        "flags": json_values,
        "timestamp": maybe(any_text),
    },
)
llm = st.fixed_dictionaries(
    {"judge": maybe(any_text)},
    optional={"labels": maybe(st.dictionaries(st.just("overall"), maybe(st.sampled_from(LABELS)))), "rationale": texty},
)
native_row = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(any_text, numbers, json_values),
        "prompt": texty,
        "conversation": maybe(st.lists(turn, max_size=3)),
        "responses": maybe(st.lists(response, max_size=3)),
        "metadata": json_values,
        "human_annotations": maybe(st.lists(human, max_size=2)),
        "llm_annotations": maybe(st.lists(llm, max_size=2)),
        "unknown": json_values,
    },
)
# Close to valid: a good row with one field replaced (most of them then fail in one place only).
good_native = st.builds(
    lambda n, field, value: {
        "id": f"q{n}",
        "prompt": "Which is better?",
        "responses": [{"text": "A"}, {"text": "B"}],
        **({field: value} if field else {}),
    },
    st.integers(0, 5),
    st.sampled_from([None, "id", "prompt", "responses", "metadata", "conversation", "human_annotations", "x"]),
    json_values,
)
FORMAT_KEYS = {
    "native": ["id", "prompt", "responses", "conversation", "metadata", "human_annotations", "llm_annotations"],
    "multipref": [
        "comparison_id", "text", "model_a", "completion_a", "model_b", "completion_b",
        "normal_worker_annotations", "expert_worker_annotations", "prompt_id", "source",
    ],
    "helpsteer2-preference": [
        "prompt", "response_1", "response_2", "preference_strength", "preference_statement", "split", "id",
    ],
    "pandalm": [
        "id", "instruction", "input", "response1", "response2", "human_labels", "llm_labels", "llm_reasons", "metadata",
    ],
}  # fmt: skip
# Valid rows with odd content where content may be anything (metadata, texts, models, annotations), so
# that whole files pass validation and the write path (COPY into PostgreSQL) meets the odd values too.
nonblank = utf8_text.filter(lambda t: t.strip() != "")
odd_valid_row = st.fixed_dictionaries(
    {
        "prompt": nonblank | st.just("x" * 1200),  # over IMPORT_MAX_FIELD_CHARS (set below): refused
        "responses": st.lists(
            st.fixed_dictionaries({"text": utf8_text}, optional={"model": any_text}), min_size=2, max_size=2
        ),
    },
    optional={
        "metadata": st.dictionaries(any_text, json_values, max_size=4),
        "conversation": st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": utf8_text}),
            min_size=1,
            max_size=3,
        ),
        "human_annotations": st.lists(
            st.fixed_dictionaries(
                {"annotator": nonblank, "labels": st.fixed_dictionaries({"overall": st.sampled_from(LABELS)})},
                optional={
                    "justification": any_text,
                    "tier": st.sampled_from(["normal", "expert"]),
                    "time_spent": numbers,
                },
            ),
            max_size=2,
            unique_by=lambda h: h["annotator"],
        ),
        "llm_annotations": st.lists(
            st.fixed_dictionaries(
                {"judge": nonblank, "labels": st.fixed_dictionaries({"overall": st.sampled_from(LABELS)})}
            ),
            max_size=1,
        ),
    },
)
generic_row = st.sampled_from(list(FORMAT_KEYS)).flatmap(
    lambda fmt: st.dictionaries(st.sampled_from(FORMAT_KEYS[fmt]) | any_text, json_values, max_size=8)
)
rows = st.one_of(good_native, native_row, generic_row)
formats = st.sampled_from(FORMATS)


# --- files ------------------------------------------------------------------------------------------------


@st.composite
def jsonl_files(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A file, and the format it is in (None: any format, drawn by the test)."""
    if draw(st.booleans()):  # a native file of valid rows with odd content
        n = draw(st.integers(1, 4))
        good = [{"id": f"odd-{k}", **draw(odd_valid_row)} for k in range(n)]
        data = "\n".join(json.dumps(r, ensure_ascii=draw(st.booleans())) for r in good)
        return data.encode("utf-8", "surrogatepass"), "native"
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["row", "row", "row", "json", "text", "bytes", "deep"]))
        if kind == "row":
            line = json.dumps(draw(rows), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        elif kind == "json":
            line = json.dumps(draw(json_values)).encode()
        elif kind == "text":
            line = draw(utf8_text).replace("\n", " ").encode()
        elif kind == "deep":  # nesting up to past the JSON parser's recursion limit
            depth = draw(st.sampled_from([50, 500, 900, 990, 5000, 100_000]))
            key = draw(st.sampled_from(["metadata", "responses", "prompt", "id"]))
            line = b'{"id": "deep", "prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "' + key.encode()
            line += b'": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
        else:
            line = draw(st.binary(max_size=30)).replace(b"\n", b" ")
        lines.append(line)
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n"])), None


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, str | None]:
    if draw(st.booleans()):  # the native CSV shape, valid, with odd text in every cell
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "prompt", "response_1", "response_2", "model_1", "metadata.source", "metadata"])
        for k in range(draw(st.integers(1, 4))):
            meta = json.dumps(draw(st.dictionaries(utf8_text, json_values, max_size=3)))
            cells = [draw(nonblank), draw(nonblank), draw(nonblank), draw(utf8_text), draw(utf8_text), meta]
            writer.writerow([f"odd-{k}", *cells])
        return out.getvalue().encode(), "native"
    fmt = draw(formats)
    known = FORMAT_KEYS[fmt] + ["response_1", "response_2", "model_1", "metadata.source"]
    header = draw(st.lists(st.sampled_from(known) | utf8_text, min_size=1, max_size=7, unique=True))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    odd = ["", "[", '{"a": ', "[" * 3000, "[" * 900 + "]" * 900, "[" + "9" * 5000 + "]", '{"n": ' + "1" * 4400 + "}"]
    cell = st.one_of(utf8_text, json_values.map(_cell), st.sampled_from(odd))
    for _ in range(draw(st.integers(0, 5))):
        width = len(header) + draw(st.sampled_from([0, 0, 0, -1, 1]))
        writer.writerow([_cell(draw(cell)) for _ in range(max(width, 0))])
    text = out.getvalue()
    if draw(st.integers(0, 9)) == 0:  # a broken quote, or stray bytes
        text += '"unterminated,' + draw(utf8_text)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # a BOM, as spreadsheets write
    if draw(st.integers(0, 9)) == 0:
        data += draw(st.binary(max_size=20))
    return data, None


PARQUET_COLUMNS: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "id": (pa.string(), utf8_text),
    "id_int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "prompt": (pa.string(), utf8_text),
    "text": (pa.string(), utf8_text),
    "instruction": (pa.string(), utf8_text),
    "response_1": (pa.string(), utf8_text),
    "response_2": (pa.string(), utf8_text),
    "response1": (pa.string(), utf8_text),
    "response2": (pa.string(), utf8_text),
    "completion_a": (pa.string(), utf8_text),
    "completion_b": (pa.string(), utf8_text),
    "comparison_id": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "preference_strength": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "responses": (
        pa.list_(pa.struct([("text", pa.string()), ("model", pa.string())])),
        st.lists(st.fixed_dictionaries({"text": utf8_text | st.none(), "model": utf8_text | st.none()}), max_size=3),
    ),
    "conversation": (
        pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
        st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]), "content": utf8_text})),
    ),
    "metadata": (
        pa.struct([("source", pa.string()), ("n", pa.int64()), ("when", pa.timestamp("us")), ("blob", pa.binary())]),
        st.fixed_dictionaries(
            {
                "source": utf8_text | st.none(),
                "n": st.integers(-(2**63), 2**63 - 1) | st.none(),
                "when": st.datetimes() | st.none(),
                "blob": st.binary(max_size=8) | st.none(),
            }
        ),
    ),
    "human_labels": (pa.list_(pa.string()), st.lists(st.sampled_from(["response1", "response2", "tie", "?"]))),
    "flag": (pa.bool_(), st.booleans()),
    "when": (pa.date32(), st.dates()),
    "raw": (pa.binary(), st.binary(max_size=16)),
}


@st.composite
def parquet_tables(draw: st.DrawFn) -> tuple[pa.Table, str | None]:
    if draw(st.booleans()):  # native columns, valid, with odd content (timestamps and bytes in metadata)
        n = draw(st.integers(1, 4))
        good = {
            "id": pa.array([f"odd-{k}" for k in range(n)]),
            "prompt": pa.array([draw(nonblank) for _ in range(n)]),
            "responses": pa.array(
                [[{"text": draw(utf8_text), "model": draw(utf8_text)} for _ in range(2)] for _ in range(n)],
                type=PARQUET_COLUMNS["responses"][0],
            ),
            "metadata": pa.array(
                [draw(PARQUET_COLUMNS["metadata"][1]) for _ in range(n)], type=PARQUET_COLUMNS["metadata"][0]
            ),
        }
        return pa.table(good), "native"
    names = draw(st.lists(st.sampled_from(sorted(PARQUET_COLUMNS)), min_size=1, max_size=7, unique=True))
    n = draw(st.integers(0, 4))
    arrays, fields = [], []
    for name in names:
        kind, values = PARQUET_COLUMNS[name]
        column = [draw(values | st.none()) for _ in range(n)]
        arrays.append(pa.array(column, type=kind))
        fields.append(pa.field(name.removesuffix("_int"), kind))
    if len({f.name for f in fields}) != len(fields):  # id and id_int both
        return pa.table({}), None
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)), None


# --- the check ----------------------------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def project(self) -> Project:
        self.n += 1
        return ProjectFactory(slug=f"fuzz-{self.n}", aspects=["overall", "helpful"])


@pytest.fixture
def projects(settings: Any) -> Counter:
    settings.IMPORT_MAX_FIELD_CHARS = 1000  # so that long texts meet the limit too
    return Counter()


def outcome(project: Project, path: Path, fmt: str, file_type: str) -> str:
    """Validate and import the file: "ok", or "refused" with the project's own errors. Anything else fails."""
    report = validate_file(project, path, fmt=fmt, file_type=file_type)
    for error in report.errors:
        assert WHERE.match(error.where), f"validation error without a row: {error}"
        assert error.message.strip(), f"validation error without a message: {error}"
    assert report.error_total >= len(report.errors)
    failed: ImportFailed | None = None
    try:
        result = import_file(project, path, fmt=fmt, file_type=file_type)
    except ImportFailed as exc:  # the only exception allowed
        failed = exc
    if failed is not None:
        assert not report.ok, f"validate_file found no problem, import_file failed: {failed}"
        assert failed.errors
        assert failed.total == report.error_total
        for message in failed.errors:
            where, _, rest = message.partition(": ")
            assert WHERE.match(where), f"an import error that names no row: {message!r}"
            assert rest.strip(), f"an import error without a message: {message!r}"
        assert not Item.objects.filter(project=project).exists()  # all or nothing
        return "refused"
    assert report.ok, f"import_file succeeded where validate_file found {report.errors[:3]}"
    assert result.created == report.new == Item.objects.filter(project=project).count()
    return "ok"


@FUZZ
@given(file=jsonl_files(), fmt=formats)
def test_jsonl_files_import_or_fail_with_row_errors(
    projects: Counter, tmp_path: Path, file: tuple[bytes, str | None], fmt: str
) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(file[0])
    event(outcome(projects.project(), path, file[1] or fmt, "jsonl"))


@FUZZ
@given(file=csv_files(), fmt=formats)
def test_csv_files_import_or_fail_with_row_errors(
    projects: Counter, tmp_path: Path, file: tuple[bytes, str | None], fmt: str
) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(file[0])
    event(outcome(projects.project(), path, file[1] or fmt, "csv"))


@FUZZ
@given(file=parquet_tables(), fmt=formats, broken=st.integers(0, 19))
def test_parquet_files_import_or_fail_with_row_errors(
    projects: Counter, tmp_path: Path, file: tuple[pa.Table, str | None], fmt: str, broken: int
) -> None:
    path = tmp_path / "fuzz.parquet"
    table, fmt = file[0], file[1] or fmt
    pq.write_table(table, path)
    if broken == 0:  # cut short: not a readable Parquet file
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    event(outcome(projects.project(), path, fmt, "parquet"))


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.binary(max_size=200), file_type=st.sampled_from(["jsonl", "json", "csv", "parquet"]))
def test_the_readers_take_any_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes, file_type: str) -> None:
    path = tmp_path_factory.mktemp("bytes") / f"random.{file_type}"
    path.write_bytes(data)
    for where, row in read_rows(path, file_type):
        assert WHERE.match(where)
        assert isinstance(row, dict | ReadError)

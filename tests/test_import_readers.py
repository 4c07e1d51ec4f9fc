"""The streaming readers, on their own: no database, only files written in tmp_path."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from webapp.importing import readers
from webapp.importing.readers import FileTypeError, ReadError, detect_file_type, read_rows


def rows_of(path: Path, file_type: str) -> list[tuple[str, Any]]:
    return list(read_rows(path, file_type))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- file types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"), ("a.JSON", "json"), ("a.csv", "csv"), ("a.parquet", "parquet")],
)
def test_the_file_type_comes_from_the_extension(name, expected):
    assert detect_file_type(Path(name)) == expected


def test_an_explicit_file_type_wins_over_the_extension():
    assert detect_file_type(Path("items.txt"), "jsonl") == "jsonl"


def test_an_unknown_extension_asks_for_a_file_type():
    with pytest.raises(FileTypeError, match=r"cannot tell the file type of 'items\.txt'.*\.jsonl, \.json, \.csv"):
        detect_file_type(Path("items.txt"))


def test_an_unknown_explicit_file_type_is_refused():
    with pytest.raises(FileTypeError, match="unknown file type 'xlsx'"):
        detect_file_type(Path("items.jsonl"), "xlsx")


# --- JSONL --------------------------------------------------------------------------------------


def test_jsonl_rows_are_named_by_line_and_blank_lines_are_skipped(write_jsonl):
    path = write_jsonl([{"id": 1}, "", "   ", {"id": 2}])
    assert rows_of(path, "jsonl") == [("line 1", {"id": 1}), ("line 4", {"id": 2})]


def test_a_jsonl_line_that_is_not_json_is_a_read_error_and_reading_goes_on(write_jsonl):
    path = write_jsonl([{"id": 1}, '{"id": 2,', {"id": 3}])
    rows = rows_of(path, "jsonl")
    assert rows[0] == ("line 1", {"id": 1})
    where, error = rows[1]
    assert where == "line 2"
    assert isinstance(error, ReadError)
    assert error.message.startswith("invalid JSON (")
    assert rows[2] == ("line 3", {"id": 3})


def test_a_jsonl_line_that_is_not_an_object_is_a_read_error(write_jsonl):
    path = write_jsonl(["[1, 2]", "7"])
    assert rows_of(path, "jsonl") == [
        ("line 1", ReadError("expected a JSON object, got list")),
        ("line 2", ReadError("expected a JSON object, got int")),
    ]


def test_invalid_utf8_in_jsonl_names_the_line(write_jsonl):
    path = write_jsonl([{"id": 1}, b'{"id": "caf\xe9"}', {"id": 3}])
    rows = rows_of(path, "jsonl")
    assert rows[1][0] == "line 2"
    assert isinstance(rows[1][1], ReadError)
    assert "invalid UTF-8" in rows[1][1].message
    assert rows[2] == ("line 3", {"id": 3})


def test_jsonl_keeps_non_ascii_text(write_jsonl):
    path = write_jsonl([{"prompt": "Grüße, 世界 🌍"}])
    assert rows_of(path, "jsonl") == [("line 1", {"prompt": "Grüße, 世界 🌍"})]


# --- JSON arrays --------------------------------------------------------------------------------


def test_a_json_array_yields_its_objects_named_by_item(tmp_path):
    path = tmp_path / "items.json"
    path.write_text(json.dumps([{"id": 1}, {"id": 2}, {"id": 3}], indent=2))
    assert rows_of(path, "json") == [("item 1", {"id": 1}), ("item 2", {"id": 2}), ("item 3", {"id": 3})]


def test_items_that_cross_a_chunk_boundary_are_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_CHUNK", 7)
    items = [{"id": i, "prompt": "é" * i + " long enough to span chunks"} for i in range(20)]
    path = tmp_path / "items.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    assert rows_of(path, "json") == [(f"item {i + 1}", item) for i, item in enumerate(items)]


def test_an_empty_json_array_yields_nothing(tmp_path):
    path = tmp_path / "items.json"
    path.write_text("[ ]\n")
    assert rows_of(path, "json") == []


def test_a_json_file_that_is_not_an_array_is_a_read_error(tmp_path):
    path = tmp_path / "items.json"
    path.write_text('{"id": 1}')
    assert rows_of(path, "json") == [
        ("item 1", ReadError("a .json file must hold a JSON array of items ([{...}, {...}])"))
    ]


def test_an_unclosed_json_array_is_a_read_error(tmp_path):
    path = tmp_path / "items.json"
    path.write_text('[{"id": 1}, {"id": 2}')
    rows = rows_of(path, "json")
    assert rows[:2] == [("item 1", {"id": 1}), ("item 2", {"id": 2})]
    assert rows[2] == ("item 3", ReadError("the JSON array is not closed (missing ])"))


def test_content_after_the_closing_bracket_is_a_read_error(tmp_path):
    path = tmp_path / "items.json"
    path.write_text('[{"id": 1}] {"id": 2}')
    assert rows_of(path, "json") == [
        ("item 1", {"id": 1}),
        ("item 2", ReadError("unexpected content after the closing ]")),
    ]


def test_a_broken_json_item_names_the_item(tmp_path):
    path = tmp_path / "items.json"
    path.write_text('[{"id": 1}, {"id": 2,, "x": 1}]')
    rows = rows_of(path, "json")
    assert rows[0] == ("item 1", {"id": 1})
    assert rows[1][0] == "item 2"
    assert rows[1][1].message.startswith("invalid JSON")


def test_invalid_utf8_in_a_json_array_names_the_item_that_holds_it(tmp_path):
    path = tmp_path / "items.json"
    blob = json.dumps([{"id": 1}, {"id": 2}, {"id": "X"}, {"id": 4}]).encode()
    bad_at = blob.index(b"X")
    path.write_bytes(blob.replace(b"X", b"\xff"))
    rows = rows_of(path, "json")
    assert rows[:2] == [("item 1", {"id": 1}), ("item 2", {"id": 2})]
    assert rows[2] == ("item 3", ReadError(f"invalid UTF-8 at byte {bad_at} (the file must be UTF-8 encoded)"))
    assert len(rows) == 3


def test_invalid_utf8_in_a_later_json_chunk_gives_the_byte_offset_in_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_CHUNK", 16)
    blob = json.dumps([{"id": i, "text": "é" * 5} for i in range(6)], ensure_ascii=False).encode()
    bad_at = blob.rindex("é".encode())
    path = tmp_path / "items.json"
    path.write_bytes(blob[:bad_at] + b"\xc3\x28" + blob[bad_at + 2 :])
    rows = rows_of(path, "json")
    assert [where for where, _ in rows] == [f"item {i}" for i in range(1, 7)]
    assert all(isinstance(row, dict) for _, row in rows[:5])
    assert rows[5][1] == ReadError(f"invalid UTF-8 at byte {bad_at} (the file must be UTF-8 encoded)")


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_rows_are_numbered_as_a_spreadsheet_shows_them_and_empty_cells_are_absent(tmp_path):
    path = write_csv(tmp_path / "items.csv", ["id", "prompt", "note"], [["1", "Hi", ""], ["2", "Yo", "x"]])
    assert rows_of(path, "csv") == [
        ("row 2", {"id": "1", "prompt": "Hi"}),
        ("row 3", {"id": "2", "prompt": "Yo", "note": "x"}),
    ]


def test_csv_cells_with_line_breaks_do_not_shift_the_row_numbers(tmp_path):
    path = write_csv(
        tmp_path / "items.csv", ["id", "prompt"], [["1", "line one\nline two\nline three"], ["2", "plain"]]
    )
    assert rows_of(path, "csv") == [
        ("row 2", {"id": "1", "prompt": "line one\nline two\nline three"}),
        ("row 3", {"id": "2", "prompt": "plain"}),
    ]


def test_a_csv_header_and_byte_order_mark_are_stripped(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes("\ufeff id , prompt \n1,Hi\n".encode())
    assert rows_of(path, "csv") == [("row 2", {"id": "1", "prompt": "Hi"})]


def test_blank_csv_lines_are_skipped(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,prompt\n1,a\n\n,\n2,b\n")
    assert [row for _, row in rows_of(path, "csv")] == [{"id": "1", "prompt": "a"}, {"id": "2", "prompt": "b"}]


def test_a_csv_row_with_the_wrong_number_of_cells_is_a_read_error(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,prompt\n1,a\n2,b,c\n3,c\n")
    assert rows_of(path, "csv") == [
        ("row 2", {"id": "1", "prompt": "a"}),
        ("row 3", ReadError("has 3 cells, the header has 2")),
        ("row 4", {"id": "3", "prompt": "c"}),
    ]


def test_a_csv_header_that_repeats_a_column_is_a_read_error(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,prompt,id\n1,a,2\n")
    assert rows_of(path, "csv") == [("row 1", ReadError("the header repeats a column name"))]


def test_invalid_utf8_in_csv_names_the_row(tmp_path):
    path = tmp_path / "items.csv"
    blob = b"id,prompt\n1,a\n2,caf\xe9\n3,c\n"
    bad_at = blob.index(b"\xe9")
    path.write_bytes(blob)
    rows = rows_of(path, "csv")
    assert rows == [
        ("row 2", {"id": "1", "prompt": "a"}),
        ("row 3", ReadError(f"invalid UTF-8 at byte {bad_at} (the file must be UTF-8 encoded)")),
    ]


def test_invalid_utf8_inside_a_multi_line_csv_cell_does_not_yield_a_cut_short_row(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b'id,prompt\n1,a\n2,"first line\nsecond caf\xe9"\n3,c\n')
    rows = rows_of(path, "csv")
    assert rows[0] == ("row 2", {"id": "1", "prompt": "a"})
    assert rows[1][0] == "row 3"
    assert isinstance(rows[1][1], ReadError)
    assert "invalid UTF-8" in rows[1][1].message
    assert len(rows) == 2


def test_a_header_only_csv_yields_nothing(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,prompt\n")
    assert rows_of(path, "csv") == []


def test_csv_cells_bigger_than_the_csv_modules_default_limit_are_read(tmp_path):
    big = "x" * 200_000
    path = write_csv(tmp_path / "items.csv", ["id", "prompt"], [["1", big]])
    assert rows_of(path, "csv") == [("row 2", {"id": "1", "prompt": big})]


# --- Parquet ------------------------------------------------------------------------------------


def test_parquet_rows_are_numbered_and_null_columns_are_absent(tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a", "note": None}, {"id": "b", "note": "x"}]), path)
    assert rows_of(path, "parquet") == [("row 1", {"id": "a"}), ("row 2", {"id": "b", "note": "x"})]


def test_parquet_nested_lists_of_structs_come_back_as_lists_of_dicts_without_null_fields(tmp_path):
    path = tmp_path / "items.parquet"
    table = pa.Table.from_pylist(
        [
            {"id": "a", "notes": [{"who": "x", "score": 1}, {"who": "y"}], "meta": {"k": "v", "j": None}},
            {"id": "b", "notes": [], "meta": {"k": "w", "j": "z"}},
        ]
    )
    pq.write_table(table, path)
    assert rows_of(path, "parquet") == [
        ("row 1", {"id": "a", "notes": [{"who": "x", "score": 1}, {"who": "y"}], "meta": {"k": "v"}}),
        ("row 2", {"id": "b", "notes": [], "meta": {"k": "w", "j": "z"}}),
    ]


def test_parquet_is_read_across_record_batches(tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": i} for i in range(4500)]), path, row_group_size=1000)
    rows = rows_of(path, "parquet")
    assert len(rows) == 4500
    assert rows[-1] == ("row 4500", {"id": 4499})


def test_a_file_that_is_not_parquet_is_a_read_error(tmp_path):
    path = tmp_path / "items.parquet"
    path.write_text("id,prompt\n1,a\n")
    rows = rows_of(path, "parquet")
    assert len(rows) == 1
    assert rows[0][0] == "row 1"
    assert rows[0][1].message.startswith("not a readable Parquet file")


def test_a_stray_byte_after_the_closing_bracket_is_not_ignored(tmp_path):
    path = tmp_path / "items.json"
    path.write_bytes(b'[{"id": 1}]\xc3')
    assert rows_of(path, "json") == [
        ("item 1", {"id": 1}),
        ("item 2", ReadError("unexpected content after the closing ]")),
    ]


def test_a_truncated_jsonl_line_points_at_the_end_of_the_line(write_jsonl):
    path = write_jsonl(['{"id": 1, "prompt": '])
    assert rows_of(path, "jsonl") == [("line 1", ReadError("invalid JSON (Expecting value at column 21)"))]


def test_an_integer_too_long_for_python_is_a_named_row_error(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text('{"id": "ok"}\n{"id": ' + "9" * 5000 + "}\n")
    rows = list(read_rows(path, "jsonl"))
    assert rows[0] == ("line 1", {"id": "ok"})
    where, error = rows[1]
    assert where == "line 2"
    assert isinstance(error, ReadError)
    assert "invalid JSON" in error.message


def test_a_broken_json_array_stops_buffering_at_the_item_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_JSON_ITEM_CHARS", 1000)
    monkeypatch.setattr(readers, "_CHUNK", 256)
    path = tmp_path / "broken.json"
    path.write_text('[{"id": "a"}, {"id": "b", "text": "' + "x" * 5000 + '"')  # never closed
    rows = list(read_rows(path, "json"))
    assert rows[0] == ("item 1", {"id": "a"})
    assert rows[1][0] == "item 2"
    assert isinstance(rows[1][1], ReadError)
    assert "64 MB" in rows[1][1].message

"""Streaming readers for the import file types. Pure: no database.

Each reader yields `(where, row)` pairs, where `where` names the row as a person would find it
("line 7", "item 3", "row 12") and `row` is a dict, or a `ReadError` for a row that could not be
read at all (bad UTF-8, bad JSON). Memory stays constant in the file's size.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_TYPES = ("jsonl", "json", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_CHUNK = 1 << 20
# One element of a JSON array may not exceed this: a syntax error must not make us buffer the whole file.
MAX_JSON_ITEM_CHARS = 64 << 20
NESTED_TOO_DEEPLY = "invalid JSON (arrays or objects nested too deeply)"


@dataclass(frozen=True)
class ReadError:
    message: str


class FileTypeError(ValueError):
    pass


Row = dict[str, Any] | ReadError


def detect_file_type(path: Path, explicit: str | None = None) -> str:
    if explicit:
        if explicit not in FILE_TYPES:
            raise FileTypeError(f"unknown file type {explicit!r} (use one of {', '.join(FILE_TYPES)})")
        return explicit
    file_type = _EXTENSIONS.get(path.suffix.lower())
    if file_type is None:
        raise FileTypeError(
            f"cannot tell the file type of {path.name!r} from its extension; "
            f"name it .jsonl, .json, .csv or .parquet, or pass a file type ({', '.join(FILE_TYPES)})"
        )
    return file_type


def read_rows(path: Path, file_type: str) -> Iterator[tuple[str, Row]]:
    readers = {"jsonl": read_jsonl, "json": read_json, "csv": read_csv, "parquet": read_parquet}
    return readers[file_type](path)


def _decode_error(exc: UnicodeDecodeError, offset: int = 0) -> ReadError:
    return ReadError(f"invalid UTF-8 at byte {offset + exc.start} (the file must be UTF-8 encoded)")


def read_jsonl(path: Path) -> Iterator[tuple[str, Row]]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, _decode_error(exc)
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text.rstrip("\r\n"))  # without the line break, columns count within the line
            except json.JSONDecodeError as exc:
                yield where, ReadError(f"invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            except ValueError as exc:  # e.g. an integer longer than Python's digit limit
                yield where, ReadError(f"invalid JSON ({exc})")
                continue
            except RecursionError:  # arrays or objects nested past the parser's limit
                yield where, ReadError(NESTED_TOO_DEEPLY)
                continue
            if not isinstance(value, dict):
                yield where, ReadError(f"expected a JSON object, got {type(value).__name__}")
                continue
            yield where, value


def read_json(path: Path) -> Iterator[tuple[str, Row]]:
    """A top-level JSON array of objects, parsed one element at a time."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("strict")
    buf = ""
    consumed_bytes = 0
    index = 0
    started = False
    finished = False
    decode_error: ReadError | None = None
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            try:
                buf += utf8.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # Read the items before the bad bytes first, so that the error names the item holding them.
                pending = utf8.getstate()[0]  # bytes of the previous chunk that exc.start also counts
                buf += (pending + chunk)[: exc.start].decode("utf-8")
                decode_error = _decode_error(exc, consumed_bytes - len(pending))
            consumed_bytes += len(chunk)
            pos = 0
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos >= len(buf):
                    break
                if not started:
                    if buf[pos] != "[":
                        yield "item 1", ReadError("a .json file must hold a JSON array of items ([{...}, {...}])")
                        return
                    started = True
                    pos += 1
                    continue
                if buf[pos] == "]":
                    finished = True
                    pos += 1
                    break
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if (chunk or decode_error) and len(buf) - pos <= MAX_JSON_ITEM_CHARS:
                        break  # maybe the element continues in the next chunk
                    message = exc.msg if len(buf) - pos <= MAX_JSON_ITEM_CHARS else "an item over 64 MB, or broken"
                    yield f"item {index + 1}", ReadError(f"invalid JSON ({message})")
                    return
                except ValueError as exc:  # e.g. an integer longer than Python's digit limit
                    yield f"item {index + 1}", ReadError(f"invalid JSON ({exc})")
                    return
                except RecursionError:
                    yield f"item {index + 1}", ReadError(NESTED_TOO_DEEPLY)
                    return
                index += 1
                pos = end
                if isinstance(value, dict):
                    yield f"item {index}", value
                else:
                    yield f"item {index}", ReadError(f"expected a JSON object, got {type(value).__name__}")
            buf = buf[pos:]
            if decode_error:
                yield f"item {index + 1}", decode_error
                return
            if finished:
                if buf.strip() or fh.read(1) or utf8.getstate()[0]:
                    yield f"item {index + 1}", ReadError("unexpected content after the closing ]")
                return
            if not chunk:
                if started:
                    yield f"item {index + 1}", ReadError("the JSON array is not closed (missing ])")
                return


def _decoded_lines(path: Path, errors: list[ReadError]) -> Iterator[str]:
    with path.open("rb") as fh:
        offset = 0
        for raw in fh:
            try:
                yield raw.decode("utf-8-sig" if offset == 0 else "utf-8")
            except UnicodeDecodeError as exc:
                errors.append(_decode_error(exc, offset))
                return
            offset += len(raw)


def read_csv(path: Path) -> Iterator[tuple[str, Row]]:
    """CSV with a header row. Empty cells count as absent; rows are numbered as a spreadsheet shows them."""
    # Our own per-field limit (IMPORT_MAX_FIELD_CHARS) gives the clear error; csv's must not fire first.
    csv.field_size_limit(1 << 30)
    decode_errors: list[ReadError] = []
    reader = csv.reader(_decoded_lines(path, decode_errors))
    header: list[str] | None = None
    number = 0  # records, not lines: a cell may hold line breaks
    try:
        for record in reader:
            if decode_errors:  # the input stopped at bad bytes: this record was cut short there
                break
            number += 1
            where = f"row {number}"
            if header is None:
                header = [h.strip() for h in record]
                if len(set(header)) != len(header):
                    yield "row 1", ReadError("the header repeats a column name")
                    return
                continue
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                yield where, ReadError(f"has {len(record)} cells, the header has {len(header)}")
                continue
            yield where, {k: v for k, v in zip(header, record, strict=True) if v != ""}
    except csv.Error as exc:
        yield f"row {number + 1}", ReadError(f"malformed CSV ({exc})")
    if decode_errors:
        yield f"row {number + 1}", decode_errors[0]


def read_parquet(path: Path) -> Iterator[tuple[str, Row]]:
    import pyarrow.parquet as pq  # heavy import, only when a Parquet file comes in

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        yield "row 1", ReadError(f"not a readable Parquet file ({exc})")
        return
    number = 0
    for batch in parquet.iter_batches(batch_size=2000):
        for row in batch.to_pylist():
            number += 1
            yield f"row {number}", _without_nulls(row)


def _without_nulls(value: Any) -> Any:
    """Parquet has no 'absent': a struct holds every field, null where the source had none. Drop those."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value

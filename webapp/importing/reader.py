"""Reading a file for an import: rows parsed, checked and prepared for writing, in batches. No database.

An import's Python work on the rows (decoding, JSON, validation, checks, hashing) is most of its time,
and the database does its own share on the other core. `read_batches` does that work in the calling
process; `read_batches_in_process` runs the same code in a child process (`python -m
webapp.importing.reader`) and passes the prepared batches back over a pipe, so that the importing
process only writes them: on two cores an import of 100,000 items then took 7.3-7.7 s instead of 8.9-10.4
(bench/import_bench.py). A thread in the importing process instead made it slower (10.4-11.0 s): parsing
and writing are both Python work, and they took turns on the GIL.
The child gets its settings on stdin and answers on stdout with pickled messages; it reads no settings
and opens no connection of its own.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from webapp import scheme as sch
from webapp.importing.formats import HumanRecord, ItemRecord, LLMRecord, RowProblems, check_record, parser_for
from webapp.importing.readers import ReadError, read_rows

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 50


@dataclass(frozen=True)
class RowError:
    """One problem of a file: `where` names the row ("line 7", "row 12"), `field` the field (empty: the row)."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}" if self.field else f"{self.where}: {self.message}"


@dataclass
class Errors:
    """A file's problems: the first MAX_REPORTED_ERRORS kept, all counted."""

    messages: list[str] = field(default_factory=list)
    entries: list[RowError] = field(default_factory=list)
    total: int = 0

    def add(self, where: str, field_name: str, message: str) -> None:
        self.total += 1
        if len(self.messages) < MAX_REPORTED_ERRORS:
            entry = RowError(where, field_name, message)
            self.entries.append(entry)
            self.messages.append(str(entry))


@dataclass(frozen=True)
class PreparedItem:
    """A checked item as an import writes it: the long texts in UTF-8, the hash and the metadata's JSON made."""

    external_id: str
    content_hash: str
    prompt: bytes
    conversation: list[dict[str, str]] | None
    metadata_json: str
    responses: tuple[tuple[str, bytes], ...]  # (model, text)
    human: list[HumanRecord]
    llm: list[LLMRecord]

    @classmethod
    def of(cls, record: ItemRecord) -> PreparedItem:
        """`record` must have passed check_record (its texts encode)."""
        texts = record.texts_utf8()
        return cls(
            external_id=record.external_id,
            content_hash=record.content_hash(),
            prompt=texts[0],
            conversation=record.conversation,
            metadata_json=record.metadata_json(),
            responses=tuple(zip((r.model for r in record.responses), texts[-len(record.responses) :], strict=True)),
            human=record.human,
            llm=record.llm,
        )


@dataclass(frozen=True)
class ReadSettings:
    """What reading a file needs to know of the import: picklable, for the child process."""

    path: Path
    fmt: str
    file_type: str
    scheme: sch.Scheme
    max_chars: int
    batch_size: int


def checked_records(
    settings: ReadSettings, errors: Errors, seen: dict[str, str]
) -> Iterator[tuple[str, ItemRecord | None]]:
    """Every row of the file, parsed and checked as an import checks it: (where, the record or None for problems).

    Problems go to `errors`; `seen` maps each external id to the row that first had it (a later one is a duplicate).
    """
    parse = parser_for(settings.fmt, scale=settings.scheme.scale, file_type=settings.file_type)
    for where, row in read_rows(settings.path, settings.file_type):
        if isinstance(row, ReadError):
            errors.add(where, "", row.message)
            yield where, None
            continue
        try:
            record = parse(row)
        except RowProblems as exc:
            for f, m in exc.problems:
                errors.add(where, f, m)
            yield where, None
            continue
        problems = check_record(record, settings.scheme, max_chars=settings.max_chars)
        if record.external_id in seen:
            problems.append(("id", f"duplicate id {record.external_id!r} (also at {seen[record.external_id]})"))
        else:
            seen[record.external_id] = where
        for f, m in problems:
            errors.add(where, f, m)
        yield where, None if problems else record


Batch = list[tuple[str, PreparedItem]]


def read_batches(settings: ReadSettings, errors: Errors) -> Generator[Batch, None, None]:
    """The file's items without problems, prepared, `batch_size` at a time; the problems go to `errors`."""
    batch: Batch = []
    for where, record in checked_records(settings, errors, {}):
        if record is None:
            continue
        batch.append((where, PreparedItem.of(record)))
        if len(batch) >= settings.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class ReaderFailed(Exception):
    """The child process that reads the file ended without reading it all."""


# Messages from the child, each one pickle: ("errors", [RowError], total so far), ("batch", Batch), ("end",).
def _child_main(stdin: BinaryIO, stdout: BinaryIO) -> None:
    settings: ReadSettings = pickle.load(stdin)  # noqa: S301 (from the parent process)
    errors = Errors()
    reported = 0
    for batch in read_batches(settings, errors):
        if errors.total > reported:  # before the batch: the parent writes nothing once a problem is known
            pickle.dump(("errors", errors.entries[reported:], errors.total), stdout, protocol=pickle.HIGHEST_PROTOCOL)
            reported = len(errors.entries)
        pickle.dump(("batch", batch), stdout, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.dump(("errors", errors.entries[reported:], errors.total), stdout, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.dump(("end",), stdout, protocol=pickle.HIGHEST_PROTOCOL)
    stdout.flush()


def read_batches_in_process(settings: ReadSettings, errors: Errors) -> Generator[Batch, None, None]:
    """read_batches, done by a child process. ReaderFailed where the child ends early (its stderr in the message).

    Closing the iterator early stops the child.
    """
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "webapp.importing.reader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=Path(__file__).resolve().parent.parent.parent,  # the project root, where `webapp` imports from
        )
        log.info("reading %s in a child process (pid %d)", settings.path.name, child.pid)
        assert child.stdin is not None  # both are pipes (PIPE above)
        assert child.stdout is not None
        try:
            with child.stdin:
                pickle.dump(settings, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            while True:
                try:
                    message: tuple[Any, ...] = pickle.load(child.stdout)  # noqa: S301 (our own child's output)
                except (EOFError, pickle.UnpicklingError):  # it ended, perhaps half-way through a message
                    status = child.wait()
                    stderr.seek(0)
                    said = stderr.read()[-4000:].decode("utf-8", "replace").strip()
                    if said:
                        log.error("the import's reader process ended early (exit status %s):\n%s", status, said)
                    last = said.splitlines()[-1] if said else "no message"  # a traceback's last line: the error
                    raise ReaderFailed(
                        f"the process reading the file ended early (exit status {status}): {last}"
                    ) from None
                if message[0] == "batch":
                    yield message[1]
                elif message[0] == "errors":
                    for entry in message[1]:
                        errors.add(entry.where, entry.field, entry.message)
                    errors.total = max(errors.total, message[2])  # past MAX_REPORTED_ERRORS only counted
                elif message[0] == "end":
                    child.wait()
                    return
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()


if __name__ == "__main__":
    # Through the module's own name, so that what it pickles is webapp.importing.reader's, not __main__'s.
    from webapp.importing import reader

    reader._child_main(sys.stdin.buffer, sys.stdout.buffer)

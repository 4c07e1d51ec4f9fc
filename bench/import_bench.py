"""Import benchmark: 100,000 pairwise items from a native-format JSONL file into PostgreSQL.

The file is generated first (deterministic, not timed). Then `import_file` runs end to end —
reading, parsing, validation, hashing, COPY into the tables, commit — into a fresh project, and
once more on the same file (every item unchanged: the idempotent re-import path).
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.common import Context, Row, fmt_mb, fmt_seconds

N_ITEMS = 100_000
PROMPT_CHARS = 1_000
RESPONSE_CHARS = 2_000
SEED = 20240501
TARGET_SECONDS = 10.0
TARGET_PEAK_MB = 500.0

CATEGORIES = (
    "coding",
    "math",
    "writing",
    "summarization",
    "open-qa",
    "closed-qa",
    "brainstorming",
    "classification",
    "extraction",
    "safety",
)
MODELS = ("llama-3.1-70b-instruct", "gpt-4o-mini", "mistral-large", "qwen2.5-72b", "gemma-2-27b", "claude-3-haiku")
_VOCABULARY = (
    "the a an of to in and or but for with on at by from as is are was were be been this that these those it "
    "model data function value result example question answer explain because therefore however although "
    "first second finally step method approach solution problem error output input list table string number "
    "average median variance probability estimate sample population hypothesis evidence argument conclusion "
    "history economy climate energy policy market customer product design interface network server database "
    "query index transaction latency throughput memory cache thread process request response user account "
    "paragraph sentence summary outline draft revision tone audience style grammar vocabulary translation "
    "recipe ingredient temperature minutes oven flour sugar butter garden travel budget schedule meeting "
    "café naïve résumé über façade coöperate déjà jalapeño piñata smörgåsbord"
)
_WORDS = _VOCABULARY.split()
_CODE = (
    "```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```\n",
    "```js\nconst total = items.reduce((s, x) => s + x.price, 0);\nconsole.log(`total: ${total}`);\n```\n",
    "```sql\nSELECT category, count(*) FROM items GROUP BY category ORDER BY 2 DESC;\n```\n",
    '```json\n{"name": "example", "tags": ["a", "b"], "nested": {"ok": true}}\n```\n',
)


def _sentence_pool(rng: random.Random, n: int = 4_000) -> list[str]:
    pool = []
    for _ in range(n):
        words = rng.choices(_WORDS, k=rng.randint(6, 24))
        text = " ".join(words)
        text = text[0].upper() + text[1:]
        end = rng.choice((".", ".", ".", ".", "?", "!", ":"))
        if rng.random() < 0.08:
            text = f'"{text}"'
        if rng.random() < 0.05:
            text += " \u2014 see \\path\\to\\file, tab\there"
        if rng.random() < 0.02:
            text += " \U0001f642"
        pool.append(text + end)
    return pool


def _text(rng: random.Random, pool: list[str], target: int) -> str:
    """Roughly `target` characters of sentences, paragraphs, the odd list or code block."""
    parts: list[str] = []
    size = 0
    limit = int(target * rng.uniform(0.85, 1.15))
    while size < limit:
        r = rng.random()
        if r < 0.04:
            piece = "\n" + rng.choice(_CODE)
        elif r < 0.10:
            piece = "\n- " + rng.choice(pool)
        elif r < 0.22:
            piece = "\n\n" + rng.choice(pool)
        else:
            piece = " " + rng.choice(pool)
        parts.append(piece)
        size += len(piece)
    return "".join(parts).strip()


def generate(path: Path, n: int = N_ITEMS, seed: int = SEED) -> int:
    """Write `n` native-format pairwise items to `path`; returns the file's size in bytes."""
    rng = random.Random(seed)
    pool = _sentence_pool(rng)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            model_a, model_b = rng.sample(MODELS, 2)
            row: dict[str, Any] = {
                "id": f"bench-{i:06d}",
                "prompt": _text(rng, pool, PROMPT_CHARS),
                "responses": [
                    {"text": _text(rng, pool, RESPONSE_CHARS), "model": model_a},
                    {"text": _text(rng, pool, RESPONSE_CHARS), "model": model_b},
                ],
                "metadata": {
                    "category": rng.choice(CATEGORIES),
                    "source": f"synthetic-{rng.randint(1, 5)}",
                    "difficulty": rng.randint(1, 5),
                },
            }
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())  # so that writing it back to disk does not overlap the timed import
    return path.stat().st_size


def _children_peak_mb() -> float:
    """The largest peak RSS of this process's finished children, in MB (ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6


def run(ctx: Context) -> list[Row]:
    from webapp.models import Item, Response
    from webapp.services.imports import import_file
    from webapp.services.projects import create_project

    tmp = Path(tempfile.mkdtemp(prefix="hybridpref-bench-"))
    try:
        path = tmp / "items.jsonl"
        size = generate(path)
        ctx.note(f"generated {N_ITEMS:,} items, {size / 1e6:.0f} MB, in {path}")
        project = create_project(slug="bench-import", name="Import benchmark")

        with ctx.measure() as first:
            result = import_file(project, path, fmt="native")
        reader_mb = _children_peak_mb()  # the child process that read the file (webapp.importing.reader)
        items = Item.objects.filter(project=project).count()
        responses = Response.objects.filter(item__project=project).count()
        if result.created != N_ITEMS or items != N_ITEMS or responses != 2 * N_ITEMS:
            raise AssertionError(
                f"import wrote {items} items and {responses} responses (result: {result}); "
                f"expected {N_ITEMS} and {2 * N_ITEMS}"
            )

        with ctx.measure() as again:
            result = import_file(project, path, fmt="native")
        reader_again_mb = _children_peak_mb()  # the larger of the two readers
        if result.unchanged != N_ITEMS or result.total != N_ITEMS:
            raise AssertionError(f"re-import: expected {N_ITEMS} unchanged items, got {result}")
        if Item.objects.filter(project=project).count() != N_ITEMS:
            raise AssertionError("re-import changed the number of items")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rate = N_ITEMS / first.seconds
    return [
        Row(
            "Import 100,000 pairwise items (JSONL → PostgreSQL), time",
            f"< {TARGET_SECONDS:.0f} s",
            f"{fmt_seconds(first.seconds)} ({rate:,.0f} items/s)",
            first.seconds < TARGET_SECONDS,
        ),
        Row(
            "Import 100,000 pairwise items, peak memory (RSS, importing + reading process)",
            f"< {TARGET_PEAK_MB:.0f} MB",
            f"{fmt_mb(first.peak_mb + reader_mb)} ({fmt_mb(first.peak_mb)} + {fmt_mb(reader_mb)})",
            first.peak_mb + reader_mb < TARGET_PEAK_MB,
        ),
        Row(
            "Re-import of the same file (all 100,000 unchanged), time",
            "—",
            f"{fmt_seconds(again.seconds)} ({N_ITEMS / again.seconds:,.0f} items/s)",
            None,
        ),
        Row(
            "Re-import of the same file, peak memory (RSS, importing + reading process)",
            "—",
            f"{fmt_mb(again.peak_mb + reader_again_mb)} ({fmt_mb(again.peak_mb)} + {fmt_mb(reader_again_mb)})",
            None,
        ),
    ]


METHOD = f"""\
**Import** (`bench/import_bench.py`). A deterministic generator (seed {SEED}) writes {N_ITEMS:,} native-format
pairwise items to a JSONL file in a temporary directory: each item has a prompt of about {PROMPT_CHARS:,}
characters and two responses of about {RESPONSE_CHARS:,} characters each (±15 %, sentences drawn from a pool
with paragraphs, lists, code blocks, quotes, escapes and some non-ASCII text, emoji included), two model
names and a `metadata` object with a `category`, a `source` and a `difficulty`. The file is about 550 MB.
Writing it is not timed; it is flushed to disk (fsync) before the timed call and read back from the
operating system's page cache. A project is created with `create_project` (pairwise, default scheme;
not timed). The timed call is `webapp.services.imports.import_file(project, path, fmt="native")`,
measured with `time.perf_counter()` around the call, so it includes everything the import does:
reading and decoding the file, JSON parsing, pydantic validation, the scheme checks, content hashing,
the COPY into `webapp_item` and `webapp_response` (binary format, compressed with lz4, which the import
asks for in its own transaction where the server has it) and the commit with its deferred foreign-key
checks. A file this large (over `IMPORT_READER_PROCESS_MIN_BYTES`, 100 MB by default) is read, parsed,
checked and hashed by a child process (`webapp/importing/reader.py`) that passes batches of prepared
items to the importing process over a pipe, while that process writes the previous batch: the child's
start-up is in the time.
Afterwards the benchmark counts the rows in the database and fails unless there are exactly
{N_ITEMS:,} items and {2 * N_ITEMS:,} responses. *Peak
memory* is the benchmark process's peak resident set size (VmHWM in `/proc/self/status`) during the
call: the high-water mark is reset just before the call (`echo 5 > /proc/self/clear_refs`), so it
includes Django and everything else resident in the process, but not the generator; plus the reading
child's peak (`getrusage(RUSAGE_CHILDREN).ru_maxrss`), added as if both peaked at once. The re-import runs
`import_file` again on the same file and the same project; every item is unchanged (same external id,
same content hash), so nothing is written; it is measured the same way and checked to report
{N_ITEMS:,} unchanged items. Its time includes the ANALYZE of the items' project and external id
columns that an import runs first when the planner's statistics do not yet know the project's items
(right after a bulk load, before autovacuum has got to it)."""

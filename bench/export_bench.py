"""Export benchmark: 1,000,000 human annotations (250,000 items x 4) to JSONL and to Parquet.

Setup (not timed): the items, their responses and annotations are generated inside PostgreSQL with
generate_series (seconds, where an import of that size would take minutes). METHOD has the details.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.common import Context, Row, fmt_mb, fmt_seconds

N_ITEMS = 250_000
PER_ITEM = 4
TARGET_S = 30.0
TARGET_MB = 500.0
SLUG = "bench-export"

_SETUP = [
    """INSERT INTO webapp_item (project_id, external_id, prompt, metadata, features, route, route_reason, status,
           content_hash, created_at, updated_at)
       SELECT %(project)s, 'item-' || g,
              'Question ' || g || ': explain how the ' || (g %% 97) || 'th widget differs from the next one, briefly.',
              jsonb_build_object('category', 'cat-' || (g %% 7), 'source', 'bench'), '{}'::jsonb,
              CASE WHEN g %% 3 = 0 THEN 'ai' ELSE 'human' END, '', 'pending', '', now(), now()
       FROM generate_series(1, %(n)s) g""",
    """INSERT INTO webapp_response (item_id, position, model_name, text)
       SELECT i.id, p, 'model-' || p,
              repeat('Response ' || p || ' to ' || i.external_id || ' with a few sentences of detail. ', 6)
       FROM webapp_item i CROSS JOIN generate_series(0, 1) p WHERE i.project_id = %(project)s""",
    """INSERT INTO webapp_humanannotation (item_id, external_annotator, tier, preferences, ranking, ratings, reasons,
           own_reasons, confidence, justification, time_spent, flags, imported, external_timestamp, created_at,
           updated_at)
       SELECT i.id, 'rater-' || k, CASE WHEN k < 2 THEN 'normal' ELSE 'expert' END,
              jsonb_build_object('overall', (ARRAY['A-is-clearly-better','A-is-slightly-better','Tie',
                  'B-is-slightly-better','B-is-clearly-better'])[1 + ((i.id + k) %% 5)]),
              NULL, '{}'::jsonb, '{}'::jsonb, '{}'::jsonb,
              jsonb_build_object('overall', 'fairly-confident'),
              'Because response ' || (k %% 2) || ' is more accurate.', 30 + k, '[]'::jsonb, true, '', now(), now()
       FROM webapp_item i CROSS JOIN generate_series(0, %(per)s - 1) k WHERE i.project_id = %(project)s""",
]


def run(ctx: Context) -> list[Row]:
    from django.db import connection

    from webapp.services.exports import export_now
    from webapp.services.projects import create_project

    project = create_project(slug=SLUG, name="Export benchmark", aspects=["overall"])
    with connection.cursor() as cursor:
        for sql in _SETUP:
            cursor.execute(sql, {"project": project.pk, "n": N_ITEMS, "per": PER_ITEM})
        cursor.execute("ANALYZE")
    ctx.note(f"generated {N_ITEMS:,} items with {N_ITEMS * PER_ITEM:,} human annotations")
    tmp = Path(tempfile.mkdtemp(prefix="hybridpref-export-bench-"))
    rows: list[Row] = []
    try:
        for file_type in ("jsonl", "parquet"):
            with ctx.measure() as m:
                snapshot = export_now(project, format="multipref", file_type=file_type, out=tmp / file_type, options={})
            assert snapshot.status == "done", snapshot.error
            size = sum(f["bytes"] for f in snapshot.files)
            ctx.note(
                f"{file_type}: {snapshot.row_count:,} rows, {size / 1e6:.0f} MB, {m.seconds:.2f} s, {m.peak_mb:.0f} MB"
            )
            rows.append(
                Row(
                    f"Export {N_ITEMS * PER_ITEM:,} human annotations (multipref, {file_type}): time",
                    f"< {TARGET_S:.0f} s",
                    fmt_seconds(m.seconds),
                    m.seconds < TARGET_S,
                )
            )
            rows.append(
                Row(
                    f"Export (multipref, {file_type}): peak memory",
                    f"< {TARGET_MB:.0f} MB",
                    fmt_mb(m.peak_mb),
                    m.peak_mb < TARGET_MB,
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


METHOD = f"""\
**Export** (`bench/export_bench.py`). Setup (not timed): a pairwise project with one aspect (`overall`) and
{N_ITEMS:,} items generated inside PostgreSQL with `generate_series` (a prompt of about 90 characters, two
responses of about 400 characters, metadata), each with {PER_ITEM} imported human annotations (two normal, two
expert tier; a five-label preference, a confidence and a justification), {N_ITEMS * PER_ITEM:,} in all, then
`ANALYZE`. Timed: `webapp.services.exports.export_now(project, format="multipref", file_type=...)` once for
JSONL and once for Parquet: everything a real export does (the four streaming queries in one REPEATABLE READ
snapshot, building MultiPref rows with every annotation, writing the file into a staging directory, sha256 of
each file, the dataset card, the rename into place and the snapshot record). The MultiPref format carries all
{N_ITEMS * PER_ITEM:,} annotations (one row per item, normal and expert lists), so it is the largest export
of those annotations. Peak memory is the benchmark process's peak RSS during the call."""

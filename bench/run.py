"""`make bench`: run every benchmark, print one table, write it to docs/benchmarks.md.

The runner never touches the database named in DATABASE_URL: it creates a scratch database next
to it (the same name + "_bench"), dropped and re-created on every run, migrates it, and runs each
benchmark in its own child process (so that the peak memory measured is the benchmark's own).

A benchmark is a module with `run(ctx: bench.common.Context) -> list[bench.common.Row]` and a
`METHOD` string (markdown: exactly how its figures are measured); add it to BENCHMARKS below.

    python bench/run.py                 # everything; writes docs/benchmarks.md
    python bench/run.py --only import   # one benchmark; prints only
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Row  # noqa: E402  (needs the path above when run as a script)

DOCS = ROOT / "docs" / "benchmarks.md"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/hybridpref"
SCRATCH_SUFFIX = "_bench"
TOTAL_BUDGET_S = 14 * 60  # the whole run stays under 15 minutes


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str  # holds run(ctx) -> list[Row] and METHOD
    timeout_s: int = 600


BENCHMARKS = [
    Benchmark("import", "bench.import_bench", timeout_s=600),
    Benchmark("annotate", "bench.annotate_bench", timeout_s=300),
    Benchmark("judge", "bench.judge_bench", timeout_s=480),
    Benchmark("export", "bench.export_bench", timeout_s=400),
    Benchmark("route", "bench.routing_bench", timeout_s=400),
]

INTRO = """\
# Benchmarks

This file is written by `make bench` (`bench/run.py`); edit the runner, not this file. Each figure
is measured on the machine named below, against the target the project set for it. `make bench`
runs every benchmark in one command (under 15 minutes), prints the same table and exits non-zero
if a figure misses its target.
"""

CONTEXT = """\
## Context

- **Label Studio 1.23** imports 10,000 such pairwise tasks at about 5,300 tasks/s on this machine.
  That figure is the issue's (the one that set the import target), not a measurement of `make bench`,
  which does not run Label Studio; note that it is for 10,000 tasks, the benchmark above for 100,000.
"""

GENERAL_METHOD = """\
The runner (`bench/run.py`) reads `DATABASE_URL` (as `make bench` sets it) and never uses that
database: it drops and re-creates a scratch database with the same name plus `_bench` on the same
PostgreSQL server, applies the migrations to it (`manage.py migrate`), and runs each benchmark in a
fresh child Python process with `DATABASE_URL` pointing at the scratch database, after a
`VACUUM (ANALYZE)` of the scratch database, a wait (up to 90 s) until no autovacuum worker runs, and a
`CHECKPOINT`, so that no benchmark inherits another's pending writes or maintenance. The database server runs on
the same machine, with the settings listed under Results, so the client and the server share its
cores; anything else running on the machine slows the figures (see the load average). Times are
wall-clock (`time.perf_counter()`); each figure is one run, not a best-of. Peak memory is the peak
resident set size of the benchmark's child process (VmHWM in
`/proc/self/status`, reset just before the measured call), in MB of 10^6 bytes; the database
server's memory is not included. The scratch database is dropped at the end."""


def _scratch_url(url: str) -> tuple[str, str, str]:
    """(scratch URL, scratch database name, main database name)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"postgres", "postgresql", "pgsql"}:
        raise SystemExit(f"bench: DATABASE_URL must be a PostgreSQL URL, got {parts.scheme!r}")
    main = unquote(parts.path.lstrip("/"))
    if not main:
        raise SystemExit("bench: DATABASE_URL names no database")
    scratch = main + SCRATCH_SUFFIX
    return urlunsplit(parts._replace(path="/" + scratch)), scratch, main


def _admin_connection(url: str) -> Any:
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or None,
        port=parts.port or None,
        user=unquote(parts.username or "") or None,
        password=unquote(parts.password or "") or None,
        dbname="postgres",
        autocommit=True,
    )


def _checkpoint(url: str) -> None:
    """Start each benchmark from a checkpoint, so that none inherits another's pending WAL work."""
    import psycopg

    try:
        with _admin_connection(url) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:  # needs superuser or pg_checkpoint: then the runs are just noisier
        print(f"bench: no CHECKPOINT before the benchmark ({exc})", flush=True)


def _settle(scratch_url: str, timeout_s: float = 90.0) -> None:
    """Vacuum and analyze what the previous benchmark left, and wait for autovacuum to go quiet.

    Otherwise autovacuum works through the previous benchmark's rows (100,000 imported items) while the
    next one is measured, and the next one's figures pay for it.
    """
    import psycopg

    parts = urlsplit(scratch_url)
    try:
        with psycopg.connect(
            host=parts.hostname or None,
            port=parts.port or None,
            user=unquote(parts.username or "") or None,
            password=unquote(parts.password or "") or None,
            dbname=unquote(parts.path.lstrip("/")),
            autocommit=True,
        ) as conn:
            conn.execute("VACUUM (ANALYZE)")
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                busy = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                ).fetchone()
                if not busy or not busy[0]:
                    break
                time.sleep(1.0)
    except psycopg.Error as exc:
        print(f"bench: could not settle the database before the benchmark ({exc})", flush=True)


SERVER_SETTINGS = (
    "shared_buffers",
    "fsync",
    "synchronous_commit",
    "wal_level",
    "max_wal_size",
    "default_toast_compression",
)


def _recreate_database(url: str, name: str, *, create: bool = True) -> dict[str, str]:
    """Drop (and re-create) the scratch database; returns the server's version and settings."""
    from psycopg import sql

    with _admin_connection(url) as conn:
        server = {"version": str(conn.execute("SHOW server_version").fetchone()[0])}
        for setting in SERVER_SETTINGS:
            server[setting] = str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()[0])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server


def _machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"CPU": cpu, "Cores": str(cores), "RAM": ram, "OS": f"{platform.system()} {platform.release()}"}


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _versions(server_version: str) -> dict[str, str]:
    def pkg(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "not installed"

    return {
        "Python": platform.python_version(),
        "Django": pkg("django"),
        "PostgreSQL server": server_version,
        "psycopg": pkg("psycopg"),
        "pydantic": pkg("pydantic"),
    }


def _run_child(bench: Benchmark, env: dict[str, str], timeout: float) -> tuple[list[Row], list[str], str | None]:
    """Run one benchmark in a child process: (rows, notes, error or None)."""
    with tempfile.TemporaryDirectory(prefix="hybridpref-bench-result-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", bench.name, "--result", str(out)]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [], [], f"timed out after {timeout:.0f} s"
        if proc.returncode != 0 or not out.exists():
            return [], [], f"the benchmark process failed (exit status {proc.returncode}; see the output above)"
        data = json.loads(out.read_text())
    return [Row(**r) for r in data["rows"]], data["notes"], None


def child_main(name: str, result: Path) -> None:
    """In the child: set Django up on the scratch database, run the benchmark, write its rows."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.db import connection

    expected = os.environ["HYBRIDPREF_BENCH_DB"]
    if connection.settings_dict["NAME"] != expected:  # never run against a real database
        raise SystemExit(f"bench: refusing to run on {connection.settings_dict['NAME']!r}, expected {expected!r}")
    from bench.common import Context

    bench = next(b for b in BENCHMARKS if b.name == name)
    ctx = Context()
    rows = importlib.import_module(bench.module).run(ctx)
    if not ctx.peak_reset_works:
        ctx.notes.append("could not reset the peak RSS (/proc/self/clear_refs): peaks are the process's whole life")
    result.write_text(json.dumps({"rows": [asdict(r) for r in rows], "notes": ctx.notes}))


def _table(rows: list[Row]) -> str:
    header = ("Figure", "Target", "Measured", "Pass")
    cells = [header, *((r.figure, r.target, r.measured, r.verdict) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]

    def line(c: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])


def _facts(title: str, facts: dict[str, str]) -> str:
    return f"**{title}:** " + "; ".join(f"{k} {v}" for k, v in facts.items()) + "."


def _document(
    table: str, machine: dict[str, str], versions: dict[str, str], server: dict[str, str], meta: dict[str, str]
) -> str:
    methods = "\n\n".join(importlib.import_module(b.module).METHOD for b in BENCHMARKS)
    return "\n".join(
        [
            INTRO,
            "## Results",
            "",
            table,
            "",
            _facts("Machine", machine),
            "",
            _facts("Versions", versions),
            "",
            _facts("PostgreSQL settings", server),
            "",
            _facts("Run", meta),
            "",
            CONTEXT,
            "## Method",
            "",
            GENERAL_METHOD,
            "",
            methods,
            "",
            "## Running",
            "",
            "`make bench` starts PostgreSQL and Redis if needed (`scripts/services.sh`) and runs",
            "`bench/run.py` with `DATABASE_URL` defaulting to `postgres://postgres@127.0.0.1:5432/hybridpref`",
            "(set `TEST_DATABASE_URL` to use another server); the benchmarks run in `hybridpref_bench`.",
            "`python bench/run.py --only NAME` runs one benchmark and prints its rows without writing this file.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=[b.name for b in BENCHMARKS], help="run only these")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--keep-db", action="store_true", help="leave the scratch database in place")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.result)
        return 0

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    url, scratch, main_name = _scratch_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    if scratch == main_name:
        raise SystemExit("bench: the scratch database must not be the main one")
    print(f"bench: scratch database {scratch} (re-created; {main_name} is not touched)", flush=True)
    server = _recreate_database(url, scratch)
    env = {**os.environ, "DATABASE_URL": url, "HYBRIDPREF_BENCH_DB": scratch}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300
    )

    selected = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    rows: list[Row] = []
    notes: list[str] = []
    try:
        for bench in selected:
            remaining = TOTAL_BUDGET_S - (time.monotonic() - started)
            print(f"bench: {bench.name} ...", flush=True)
            if remaining < 10:
                bench_rows, bench_notes, error = [], [], "skipped: the run's time budget is spent"
            else:
                _settle(url)
                _checkpoint(url)
                bench_rows, bench_notes, error = _run_child(bench, env, min(bench.timeout_s, remaining))
            if error:
                bench_rows = [Row(f"{bench.name} benchmark", "runs", error, False)]
            rows.extend(bench_rows)
            notes.extend(f"{bench.name}: {n}" for n in bench_notes)
    finally:
        if not args.keep_db:
            _recreate_database(url, scratch, create=False)

    table = _table(rows)
    machine = _machine()
    versions = _versions(server.pop("version"))
    meta = {
        "Date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "Commit": _git_commit(),
        "Total time": f"{time.monotonic() - started:.0f} s",
        # Other work on the machine slows the figures: a quiet machine reads about 0.0 here.
        "Load average (1 min) before the run": f"{load_before:.2f}",
    }
    print()
    print(table)
    print()
    for title, facts in (("Machine", machine), ("Versions", versions), ("PostgreSQL settings", server), ("Run", meta)):
        print(_facts(title, facts).replace("**", ""))
    for note in notes:
        print(f"note: {note}")
    if args.only or args.no_docs:
        print("\n(docs/benchmarks.md not written)")
    else:
        DOCS.parent.mkdir(exist_ok=True)
        text = _document(table, machine, versions, server, meta)
        # The load test (bench/load_test.py, `make loadtest`) keeps its own section: carry it over.
        old = DOCS.read_text() if DOCS.exists() else ""
        begin, end = "<!-- load test: begin -->", "<!-- load test: end -->"
        if begin in old and end in old:
            text = text.rstrip("\n") + "\n\n" + begin + old.split(begin, 1)[1].split(end, 1)[0] + end + "\n"
        DOCS.write_text(text)
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 1 if any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

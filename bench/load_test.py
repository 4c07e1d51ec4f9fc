"""`make loadtest`: many simulated annotators against gunicorn + PostgreSQL + Redis while a judge run and a
routing run go on; every submit the clients saw saved must be in the database exactly once.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/hybridpref python bench/load_test.py \
        [--annotators 100] [--seconds 300] [--items 40000] [--no-docs]

Like `make bench`, it never touches DATABASE_URL's database: it drops and re-creates a scratch database
next to it (the name + "_load"), migrates it, and drops it at the end. METHOD below says exactly what
runs and what is checked; the results go to docs/benchmarks.md (the "Load test" section, which
`make bench` keeps when it rewrites the file).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import annotate_bench as ab  # noqa: E402  (needs the path above when run as a script)
from bench.common import Row  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- load test: begin -->", "<!-- load test: end -->"
TARGET_P95_MS = 100.0
THINK_S = (1.0, 3.0)  # uniform, between one answer and the next; see METHOD
SKIP_SHARE = 0.05
ROUTE_AT_S = 60.0  # the routing run starts this long into the load
ROUTE_BUDGET = 0.5
SEED = 20240503
JUDGE_RPM = 1200  # the judge's rate limit: 20 requests/s, an ordinary API tier's
_NEXT_ITEM = re.compile(rb'<section id="workspace" data-assignment="(\d*)"')

METHOD = f"""\
**Load test** (`bench/load_test.py`, `make loadtest`; not part of `make bench`, which must stay under 15
minutes). *Setup, not timed:* a scratch database (`DATABASE_URL`'s name + `_load`), migrated; the annotate
benchmark's project (pairwise, two aspects, justification required, overlap 2) with 40,000 generated items
(`bench.import_bench.generate`, imported with `import_file`) and 100 annotator accounts; routing features
written straight into `Item.features` (seeded random lexical scores: computing MiniLM features for 40,000
items would take about 50 minutes on this CPU, and the routing run only needs them to exist); an
OpenAI-compatible server on 127.0.0.1 (`tests/fake_openai.py`, in a process of its own) that answers every
verdict after 50 ms, and a judge on it (concurrency 4, rate limit {JUDGE_RPM} requests/minute). Then three
other processes: gunicorn (production settings, 2 sync workers, as in the annotate benchmark), a Celery
worker (Redis broker, 2 prefork processes) and this load generator.
*The load:* each simulated annotator is a thread with its own cookie jar: it logs in (POST /login/ with a CSRF
token), opens the annotate page (which claims its first item), then repeats: think {THINK_S[0]:.0f}-{THINK_S[1]:.0f} s
(uniform), then either skip the item with a reason ({SKIP_SHARE:.0%} of the time) or submit an answer as the page's
htmx form does; the response carries the next item. The think time is far shorter than a person's, so
that 100 annotators offer about 50 submissions/s. When the load starts, a judge run over every item
(both orders) is queued on the worker, and {ROUTE_AT_S:.0f} s in, a routing run (`manage.py route --strategy random
--budget {ROUTE_BUDGET}`) routes half the items to humans and half to AI while annotators hold leases on both.
*Measured:* every HTTP status; the latency of each submit and skip (request sent to response read, in the
client). *Checked afterwards, against the clients' own ledger* (the assignments each client saw answered
"Saved." or "Skipped."): every saved assignment has exactly one annotation, no annotation exists that no
client saw saved, every skipped assignment is skipped and has none, and no item has more annotations than
the overlap.
"""


@dataclass
class Client:
    """One simulated annotator, with its ledger."""

    annotator: ab.Annotator
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    saved: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def post(self, path: str, fields: list[tuple[str, str]], word: bytes) -> bytes | None:
        a = self.annotator
        headers = {
            "HX-Request": "true",
            "HX-Current-URL": f"{a.browser.origin}/p/{ab.SLUG}/annotate/",
            "HX-Target": "workspace",
            "X-CSRFToken": a.header_token,
        }
        start = time.perf_counter()
        try:
            status, _, page = a.browser.request("POST", path, fields, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            a.browser.conn.close()
            return None
        self.latencies.append(time.perf_counter() - start)
        self.statuses[status] += 1
        if status != 200 or word not in page:
            self.errors.append(f"POST {path}: HTTP {status}")
            return None
        return page

    def step(self, rng: random.Random) -> None:
        a = self.annotator
        assignment = int(a.assignment)
        if rng.random() < SKIP_SHARE:
            path = a.action.rsplit("/", 1)[0] + "/skip"
            fields = [("csrfmiddlewaretoken", a.form_token), ("skip_reason", "outside my expertise")]
            page = self.post(path, fields, b'role="status">Skipped.</p>')
            ledger = self.skipped
        else:
            page = self.post(a.action, a.answer(), b'role="status">Saved.</p>')
            ledger = self.saved
        if page is not None:
            ledger.append(assignment)
        try:
            if page is None or not (m := _NEXT_ITEM.search(page)) or not m.group(1):
                a.open_page()
            else:
                a._read_workspace(page)
        except (ab.Failure, OSError, http.client.HTTPException) as exc:
            self.errors.append(f"next item: {exc}")
            with contextlib.suppress(ab.Failure, OSError, http.client.HTTPException):
                time.sleep(1.0)
                a.open_page()


def _start_worker(tmp: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    celery = Path(sys.executable).parent / "celery"
    cmd = [str(celery), "-A", "webapp", "worker", "-P", "prefork", "-c", "2", "-l", "WARNING"]
    cmd += ["-n", f"load-{secrets.token_hex(3)}@%h", "--without-gossip", "--without-mingle"]
    log = (tmp / "worker.log").open("wb")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


# The stand-in LLM endpoint runs in a process of its own, so that its threads do not compete with the
# load generator's for one interpreter.
_FAKE = (
    "import sys, time\n"
    "from tests.fake_openai import FakeOpenAI\n"
    "fake = FakeOpenAI(delay_s=0.05, verdict='longer').start()\n"
    "print(fake.url, flush=True)\n"
    "while True:\n"
    "    fake.requests.clear()\n"
    "    time.sleep(5)\n"
)


def _start_fake() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-c", _FAKE], cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("http://127.0.0.1:"):
        _stop(proc)
        raise ab.Failure(f"the fake LLM server did not start ({url!r})")
    return proc, url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _fake_features(project: Any) -> None:
    """Seeded random lexical scores for every item (see METHOD: the routing run needs them to exist)."""
    from django.db import connection

    from routing.features import LENGTH_FEATURES, SIMILARITY_FEATURES

    parts = [f"'{name}', random()" for name in SIMILARITY_FEATURES]
    parts += [f"'{name}', floor(random() * 400)" for name in LENGTH_FEATURES]
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.42)")
        cursor.execute(
            "UPDATE webapp_item SET features = jsonb_build_object('lexical', jsonb_build_object("  # noqa: S608
            + ", ".join(parts)
            + ")) WHERE project_id = %s",
            [project.pk],
        )
        cursor.execute("ANALYZE")


def _percentile(values: list[float], q: float) -> float:
    return ab._percentile(values, q)


def run(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> tuple[list[Row], list[str]]:
    from django.db.models import Count

    from webapp.models import Assignment, HumanAnnotation, Item
    from webapp.services.judging import create_judge, start_run

    notes: list[str] = []
    ab.N_ITEMS, ab.N_ANNOTATORS = args.items, args.annotators
    started = time.perf_counter()
    project, accounts = ab.setup(tmp)
    _fake_features(project)
    notes.append(f"setup: {args.items:,} items, {args.annotators} annotators in {time.perf_counter() - started:.0f} s")

    fake, fake_url = _start_fake()
    worker = server = None
    try:
        judge = create_judge(
            name="load-judge",
            backend="openai",
            model="fake",
            config={"base_url": fake_url, "concurrency": 4},
            requests_per_minute=JUDGE_RPM,
        )
        worker = _start_worker(tmp, env)
        port = ab._free_port()
        server = ab._start_gunicorn(port, tmp)
        rng = random.Random(SEED)
        clients = [
            Client(ab.Annotator(name, pw, ab.Browser(port), random.Random(rng.random()))) for name, pw in accounts
        ]
        failures: list[BaseException] = []

        def login(c: Client) -> None:
            try:
                c.annotator.login()
                c.annotator.open_page()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=login, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise ab.Failure(f"{len(failures)} annotators could not start: {failures[0]!r}")

        judge_run = start_run(project, judge, chunk_size=16)
        stop_at = time.perf_counter() + args.seconds

        def loop(c: Client) -> None:
            rng = c.annotator.rng
            while True:
                time.sleep(rng.uniform(*THINK_S))
                if time.perf_counter() >= stop_at:
                    return
                c.step(rng)

        threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in clients]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(min(ROUTE_AT_S, args.seconds / 2))
        route_started = time.perf_counter()
        route = subprocess.run(
            [sys.executable, "manage.py", "route", ab.SLUG, "--strategy", "random", "--budget", str(ROUTE_BUDGET)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=args.seconds,
        )
        route_s = time.perf_counter() - route_started
        for t in threads:
            t.join(timeout=args.seconds + 120)
        elapsed = time.perf_counter() - t0
        judge_run.refresh_from_db()
        judged = judge_run.judgments.filter(status="done").count()
    finally:
        _stop(fake)
        if server is not None:
            ab._stop(server)
        if worker is not None:
            _stop(worker)

    # The ledger against the database.
    saved = [a for c in clients for a in c.saved]
    skipped = [a for c in clients for a in c.skipped]
    per_assignment = dict(
        HumanAnnotation.objects.filter(item__project=project)
        .values("assignment_id")
        .annotate(n=Count("id"))
        .values_list("assignment_id", "n")
    )
    missing = [a for a in saved if per_assignment.get(a, 0) == 0]
    twice = [a for a, n in per_assignment.items() if n > 1] + [a for a, n in Counter(saved).items() if n > 1]
    unconfirmed = sorted(set(per_assignment) - set(saved))
    skipped_ok = Assignment.objects.filter(pk__in=skipped, status=Assignment.SKIPPED).count()
    skipped_with_annotation = sum(1 for a in skipped if per_assignment.get(a))
    over_filled = (
        Item.objects.filter(project=project)
        .annotate(n=Count("human_annotations"))
        .filter(n__gt=project.overlap_normal)
        .count()
    )
    routes = dict(
        Item.objects.filter(project=project).values("route").annotate(n=Count("id")).values_list("route", "n")
    )
    statuses: Counter[int] = Counter()
    for c in clients:
        statuses.update(c.statuses)
    errors = [e for c in clients for e in c.errors]
    latencies = [lat for c in clients for lat in c.latencies]
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    p50, p95, p99 = (_percentile(latencies, q) * 1000 for q in (50, 95, 99))
    ledger_ok = not missing and not twice and not unconfirmed and skipped_ok == len(skipped)
    ledger_ok = ledger_ok and not skipped_with_annotation and over_filled == 0

    notes.append(f"HTTP statuses of submits and skips: {dict(sorted(statuses.items()))}")
    notes.append(
        f"routing run: exit {route.returncode} in {route_s:.1f} s ({(route.stdout or route.stderr).strip()[-200:]});"
        f" routes after: {routes}"
    )
    notes.append(f"judge run {judge_run.pk}: {judge_run.status}, {judged:,} judgments done during the load")
    if errors:
        notes.append(f"{len(errors)} client errors; first: {errors[:3]}")
    rows = [
        Row(
            f"Load test: {args.annotators} annotators, {elapsed:.0f} s, judge + routing runs: submits and skips",
            "—",
            f"{len(latencies):,} ({len(latencies) / elapsed:.1f}/s)",
            None,
        ),
        Row("Load test: HTTP 5xx", "0", str(server_errors), server_errors == 0),
        Row("Load test: submit latency p50 / p99", "—", f"{p50:.1f} ms / {p99:.1f} ms", None),
        Row("Load test: submit latency p95", f"< {TARGET_P95_MS:.0f} ms", f"{p95:.1f} ms", p95 < TARGET_P95_MS),
        Row(
            "Load test: saved submits in the database exactly once (client ledger)",
            "all, once",
            f"{len(saved):,} saved: {len(missing)} missing, {len(twice)} twice, {len(unconfirmed)} unconfirmed;"
            f" {len(skipped):,} skipped: {len(skipped) - skipped_ok} not skipped",
            ledger_ok,
        ),
        Row("Load test: routing run during the load", "finishes", f"exit {route.returncode}", route.returncode == 0),
    ]
    return rows, notes


def _write_docs(rows: list[Row], notes: list[str], meta: dict[str, str]) -> None:
    from bench.run import _table

    section = "\n".join(
        [
            BEGIN,
            "## Load test",
            "",
            _table(rows),
            "",
            *(f"- {k}: {v}" for k, v in meta.items()),
            *(f"- {n}" for n in notes),
            "",
            METHOD,
            END,
        ]
    )
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    from bench.run import _git_commit, _machine, _recreate_database, _scratch_url

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)

    url, scratch, main_name = _scratch_url(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hp"))
    url = url.replace(f"/{scratch}", f"/{main_name}_load")
    scratch = f"{main_name}_load"
    load_before = os.getloadavg()[0]
    _recreate_database(url, scratch)
    tmp = Path(tempfile.mkdtemp(prefix="hybridpref-load-"))
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "HYBRIDPREF_MODE": os.environ.get("HYBRIDPREF_MODE", "test"),
        "HYBRIDPREF_DATA_DIR": str(tmp / "data"),
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
    }
    os.environ.update(env)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        import django

        django.setup()
        rows, notes = run(args, tmp, env)
    finally:
        from django.db import connections

        connections.close_all()
        _recreate_database(url, scratch, create=False)
        shutil.rmtree(tmp, ignore_errors=True)

    from bench.run import _table

    meta = {
        "Date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "Commit": _git_commit(),
        "Machine": ", ".join(f"{k} {v}" for k, v in _machine().items()),
        "Load average (1 min) before the run": f"{load_before:.2f}",
    }
    print(_table(rows))
    for k, v in meta.items():
        print(f"{k}: {v}")
    for n in notes:
        print(f"note: {n}")
    if not args.no_docs:
        _write_docs(rows, notes, meta)
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 1 if any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

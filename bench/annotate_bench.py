"""Annotation benchmark: "submit + next item" under gunicorn, 32 simulated annotators over HTTP.

Setup (not timed): a pairwise likert5 project with N_ITEMS items (bench.import_bench's generator,
imported with `import_file`) and N_ANNOTATORS annotator accounts. Then gunicorn serves the app from
the scratch database in production mode, and this process drives it: N_ANNOTATORS threads, each
with its own HTTP connection (http.client, kept alive where the server allows), log in, open the
annotate page and submit answers one item after the other the way the page's htmx form does, with
a short random think time in between. METHOD (below) is the full description.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.common import Context, Row

ROOT = Path(__file__).resolve().parent.parent
N_ITEMS = 20_000
N_ANNOTATORS = 32
SLUG = "bench-annotate"
WARMUP_S = 5.0
MEASURE_S = 30.0
THINK_S = (0.060, 0.180)  # uniform; mean 120 ms: 32 annotators offer up to 267 submissions/s
PAGE_SAMPLES = 100
TARGET_P95_MS = 50.0
TARGET_RATE = 200.0
SEED = 20240502
# gunicorn: see METHOD for why these.
WORKER_CLASS = "sync"
WORKERS = 3
THREADS = 1

_ASSIGNMENT = re.compile(rb'<section id="workspace" data-assignment="(\d*)"')
_ACTION = re.compile(rb'<form id="annotation-form"[^>]*?hx-post="([^"]+)"')
_FORM_TOKEN = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')
_HEADER_TOKEN = re.compile(rb'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'')
_JUSTIFICATIONS = (
    "Response A answers the question directly and is correct.",
    "B is clearer and gives a working example.",
    "Both are similar; A is a bit more concise.",
    "B follows the instructions, A ignores the format asked for.",
    "A has a factual error in the second paragraph.",
)


class Failure(Exception):
    pass


# --- a minimal browser: one keep-alive connection and a cookie jar --------------------------


class Browser:
    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, fields: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        head = {"Host": f"127.0.0.1:{self.port}", "Accept": "text/html", "Connection": "keep-alive"}
        if self.cookies:
            head["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if fields is not None:
            body = urlencode(fields).encode()
            head["Content-Type"] = "application/x-www-form-urlencoded"
            head["Origin"] = self.origin
        head.update(headers or {})
        self.conn.request(method, path, body=body, headers=head)
        response = self.conn.getresponse()
        data = response.read()
        for raw in response.msg.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel["expires"].endswith("1970 00:00:00 GMT"):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response.status, dict(response.getheaders()), data

    def close(self) -> None:
        self.conn.close()


@dataclass
class Annotator:
    username: str
    password: str
    browser: Browser
    rng: random.Random
    header_token: str = ""
    form_token: str = ""
    action: str = ""
    assignment: str = ""
    # (completion time, latency s) of each successful htmx submit, and the assignments submitted.
    samples: list[tuple[float, float]] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def login(self) -> None:
        status, _, page = self.browser.request("GET", "/login/")
        token = _FORM_TOKEN.search(page)
        if status != 200 or token is None:
            raise Failure(f"GET /login/: {status}")
        fields = [
            ("csrfmiddlewaretoken", token.group(1).decode()),
            ("username", self.username),
            ("password", self.password),
            ("next", ""),
        ]
        status, _, _ = self.browser.request("POST", "/login/", fields)
        if status != 302 or "sessionid" not in self.browser.cookies:
            raise Failure(f"POST /login/ as {self.username}: {status}")

    def open_page(self) -> float:
        """GET the annotate page (the whole page, as a browser loads it); returns its latency."""
        start = time.perf_counter()
        status, _, page = self.browser.request("GET", f"/p/{SLUG}/annotate/")
        latency = time.perf_counter() - start
        header_token = _HEADER_TOKEN.search(page)
        if status != 200 or header_token is None:
            raise Failure(f"GET annotate page: {status}")
        self.header_token = header_token.group(1).decode()
        self._read_workspace(page)
        return latency

    def _read_workspace(self, page: bytes) -> None:
        assignment, action, token = _ASSIGNMENT.search(page), _ACTION.search(page), _FORM_TOKEN.search(page)
        if assignment is None or action is None or token is None or not assignment.group(1):
            raise Failure("the workspace has no next item")
        self.assignment = assignment.group(1).decode()
        self.action = action.group(1).decode()
        self.form_token = token.group(1).decode()

    def answer(self) -> list[tuple[str, str]]:
        from webapp import scheme as sch

        rng = self.rng
        return [
            ("csrfmiddlewaretoken", self.form_token),
            ("active_seconds", f"{rng.uniform(20, 120):.1f}"),
            ("pref-overall", rng.choice(sch.LIKERT5_LABELS)),
            ("pref-helpful", rng.choice(sch.LIKERT5_LABELS)),
            ("confidence", rng.choice(sch.CONFIDENCE_LABELS)),
            ("justification", rng.choice(_JUSTIFICATIONS)),
        ]

    def submit(self) -> None:
        """One htmx submit: saves the answer and reads the next item from the returned partial.

        Anything but a 200 with "Saved." is an error; the annotator then goes on from the page returned
        (or reloads the annotate page), as a person would.
        """
        headers = {
            "HX-Request": "true",
            "HX-Current-URL": f"{self.browser.origin}/p/{SLUG}/annotate/",
            "HX-Target": "workspace",
            "HX-Trigger": "annotation-form",
            "X-CSRFToken": self.header_token,
        }
        fields = self.answer()
        start = time.perf_counter()
        try:
            status, _, page = self.browser.request("POST", self.action, fields, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.browser.conn.close()
            self._recover(None)
            return
        end = time.perf_counter()
        if status != 200 or b'role="status">Saved.</p>' not in page:
            self.errors.append(f"submit: HTTP {status}, not saved")
            self._recover(page)
            return
        self.submitted.append(self.assignment)
        self.samples.append((end, end - start))
        try:
            self._read_workspace(page)
        except Failure as exc:
            self.errors.append(str(exc))
            self._recover(None)

    def _recover(self, page: bytes | None) -> None:
        with contextlib.suppress(Failure, OSError, http.client.HTTPException):
            if page is not None:
                with contextlib.suppress(Failure):
                    self._read_workspace(page)
                    return
            self.open_page()

    def plain_submit_and_reload(self) -> float:
        """The no-script path: a plain POST (redirected) and the annotate page with the next item."""
        status, _, _ = self.browser.request("POST", self.action, self.answer())
        if status not in (302, 303):
            raise Failure(f"plain submit: HTTP {status}")
        self.submitted.append(self.assignment)
        return self.open_page()


# --- the server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_gunicorn(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HYBRIDPREF_MODE": "production",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_COOKIES": "0",
        "SECURE_SSL_REDIRECT": "0",  # plain HTTP on 127.0.0.1, no TLS proxy in front
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/13"),
        "HYBRIDPREF_DATA_DIR": str(tmp / "data"),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    gunicorn = Path(sys.executable).parent / "gunicorn"
    cmd = [
        str(gunicorn),
        "webapp.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        WORKER_CLASS,
        "--workers",
        str(WORKERS),
        "--threads",
        str(THREADS),
        "--keep-alive",
        "5",
        "--backlog",
        "256",
        "--log-level",
        "warning",
        "--error-logfile",
        str(tmp / "gunicorn.log"),
    ]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise Failure(f"gunicorn exited with {server.returncode}: {_log_tail(tmp)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return server
        except OSError:
            time.sleep(0.2)
    _stop(server)
    raise Failure(f"gunicorn did not answer within 60 s: {_log_tail(tmp)}")


def _log_tail(tmp: Path) -> str:
    try:
        return (tmp / "gunicorn.log").read_text()[-3000:]
    except OSError:
        return "(no log)"


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of these processes, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _server_pids(pid: int) -> list[int]:
    """gunicorn's master and its workers."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return pids


def _postgres_pids() -> list[int]:
    """Every PostgreSQL server process on the machine (its backends included)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def _machine_busy() -> tuple[float, float, float]:
    """(busy, total, stolen) jiffies of all CPUs, from /proc/stat. Stolen: time the hypervisor gave this
    virtual machine's CPUs to others (counted as busy); it makes every figure of a run slower."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    steal = values[7] if len(values) > 7 else 0
    return sum(values) - idle, sum(values), steal


# --- setup ------------------------------------------------------------------------------


def setup(tmp: Path) -> tuple[Any, list[tuple[str, str]]]:
    """The project, its items and the annotators (usernames and passwords)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection

    from bench.import_bench import generate
    from webapp import scheme as sch
    from webapp.models import AnnotatorProfile, Membership
    from webapp.services.imports import import_file
    from webapp.services.projects import create_project

    project = create_project(
        slug=SLUG,
        name="Annotation benchmark",
        kind=sch.PAIRWISE,
        scale=sch.LIKERT5,
        aspects=["overall", "helpful"],
        guidelines="Prefer the **more helpful** answer. Judge *correctness* first, then clarity.\n\n"
        "- Ignore length unless it hurts.\n- Flag unsafe content.",
        ask_confidence=True,
        justification_required=True,
        justification_min_length=10,
        overlap_normal=2,
    )
    path = tmp / "items.jsonl"
    generate(path, n=N_ITEMS, seed=SEED)
    result = import_file(project, path, fmt="native")
    if result.created != N_ITEMS:
        raise Failure(f"import created {result.created} items, expected {N_ITEMS}")
    path.unlink()

    # One PBKDF2 hash (the project's default hasher) for every account: hashing 32 passwords
    # would only slow the setup; the server checks each login in full.
    password = secrets.token_urlsafe(16)
    hashed = make_password(password)
    User = get_user_model()
    users = User.objects.bulk_create(
        [User(username=f"bench-annotator-{k:02d}", password=hashed) for k in range(N_ANNOTATORS)]
    )
    AnnotatorProfile.objects.bulk_create([AnnotatorProfile(user=u) for u in users])
    Membership.objects.bulk_create([Membership(project=project, user=u, role=Membership.ANNOTATOR) for u in users])
    # Planner statistics that include the new project, as autovacuum makes them within a minute or so of
    # a bulk import: otherwise the first minute after the import is measured, not the steady state.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return project, [(u.username, password) for u in users]


# --- the load ---------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _drive(annotators: list[Annotator], server_pid: int) -> dict[str, float]:
    """Run every annotator's loop for WARMUP_S + MEASURE_S; returns the load's own measurements."""
    start_barrier = threading.Barrier(len(annotators) + 1)
    stop_at = [float("inf")]

    def loop(a: Annotator) -> None:
        start_barrier.wait()
        while True:
            time.sleep(a.rng.uniform(*THINK_S))
            if time.perf_counter() >= stop_at[0]:
                return
            a.submit()

    threads = [threading.Thread(target=loop, args=(a,), daemon=True) for a in annotators]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + WARMUP_S + MEASURE_S
    start_barrier.wait()
    time.sleep(WARMUP_S)
    server_pids, postgres_pids = _server_pids(server_pid), _postgres_pids()
    usage0, busy0 = resource.getrusage(resource.RUSAGE_SELF), _machine_busy()
    server0, postgres0 = _cpu_seconds(server_pids), _cpu_seconds(postgres_pids)
    time.sleep(MEASURE_S)
    usage1, busy1 = resource.getrusage(resource.RUSAGE_SELF), _machine_busy()
    server1, postgres1 = _cpu_seconds(server_pids), _cpu_seconds(postgres_pids)
    for t in threads:
        t.join(timeout=60)

    def cpu(u: resource.struct_rusage) -> float:
        return u.ru_utime + u.ru_stime

    return {
        "t0": t0,
        "client_cpu": (cpu(usage1) - cpu(usage0)) / MEASURE_S,
        "server_cpu": (server1 - server0) / MEASURE_S,
        "postgres_cpu": (postgres1 - postgres0) / MEASURE_S,
        "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "machine_stolen": (busy1[2] - busy0[2]) / max(1, busy1[1] - busy0[1]),
    }


def run(ctx: Context) -> list[Row]:
    from django.db.models import Count

    from webapp.models import Assignment, HumanAnnotation, Item

    tmp = Path(tempfile.mkdtemp(prefix="hybridpref-annbench-"))
    server = None
    try:
        started = time.perf_counter()
        project, accounts = setup(tmp)
        ctx.note(f"setup: {N_ITEMS:,} items and {N_ANNOTATORS} annotators in {time.perf_counter() - started:.1f} s")
        port = _free_port()
        server = _start_gunicorn(port, tmp)
        rng = random.Random(SEED)
        annotators = [Annotator(name, pw, Browser(port), random.Random(rng.random())) for name, pw in accounts]

        # Log in and open the page, all at once (each login checks a full PBKDF2 hash).
        failures: list[BaseException] = []

        def start(a: Annotator) -> None:
            try:
                a.login()
                a.open_page()
            except BaseException as exc:
                failures.append(exc)

        started = time.perf_counter()
        threads = [threading.Thread(target=start, args=(a,)) for a in annotators]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise Failure(f"{len(failures)} annotators could not start: {failures[0]!r}; {_log_tail(tmp)}")
        ctx.note(f"{N_ANNOTATORS} logins and first pages in {time.perf_counter() - started:.1f} s")

        load = _drive(annotators, server.pid)
        window = (load["t0"] + WARMUP_S, load["t0"] + WARMUP_S + MEASURE_S)
        latencies = [lat for a in annotators for end, lat in a.samples if window[0] <= end < window[1]]
        errors = [e for a in annotators for e in a.errors]
        all_submits = sum(len(a.samples) for a in annotators)

        # The annotate page on its own: one annotator, no other load, each time with a new item.
        page_latencies = [annotators[0].plain_submit_and_reload() for _ in range(PAGE_SAMPLES)]

        # No submit lost, none stored twice, no item over-filled.
        submitted = [s for a in annotators for s in a.submitted]
        stored = HumanAnnotation.objects.filter(item__project=project).count()
        assignments_submitted = Assignment.objects.filter(item__project=project, status=Assignment.SUBMITTED).count()
        over_filled = (
            Item.objects.filter(project=project)
            .annotate(n=Count("human_annotations"))
            .filter(n__gt=project.overlap_normal)
            .count()
        )
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(tmp, ignore_errors=True)

    if not latencies:
        raise Failure(f"no submit succeeded in the measured window; first errors: {errors[:3]}")
    rate = len(latencies) / MEASURE_S
    p50, p95, p99 = (_percentile(latencies, q) * 1000 for q in (50, 95, 99))
    page50, page95 = (_percentile(page_latencies, q) * 1000 for q in (50, 95))
    consistent = stored == len(submitted) == len(set(submitted)) == assignments_submitted and over_filled == 0
    ctx.note(
        f"{all_submits:,} htmx submits in all ({len(latencies):,} in the {MEASURE_S:.0f} s window), "
        f"+{PAGE_SAMPLES} plain submits; mean latency {statistics.fmean(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    per_submit = 1000 / max(rate, 1e-9)  # ms of CPU per submission, for each core-fraction below
    ctx.note(
        f"CPU in the window (share of one core; ms per submission): gunicorn {load['server_cpu']:.0%} "
        f"({load['server_cpu'] * per_submit:.1f} ms), PostgreSQL {load['postgres_cpu']:.0%} "
        f"({load['postgres_cpu'] * per_submit:.1f} ms), load generator {load['client_cpu']:.0%} "
        f"({load['client_cpu'] * per_submit:.1f} ms); whole machine {load['machine_busy']:.0%} busy "
        f"({len(os.sched_getaffinity(0))} cores), of which {load['machine_stolen']:.0%} stolen by the hypervisor"
    )
    ctx.note(
        f"database: {stored:,} annotations stored, {len(submitted):,} submits answered 'Saved' "
        f"({len(set(submitted)):,} distinct assignments), {assignments_submitted:,} assignments submitted, "
        f"{over_filled} items over the overlap"
    )
    if errors:
        ctx.note(f"first errors: {errors[:3]}")
    return [
        Row(
            f"Submit + next item, {N_ANNOTATORS} concurrent annotators (gunicorn, PostgreSQL), p50",
            "—",
            f"{p50:.1f} ms",
            None,
        ),
        Row("Submit + next item, p95", f"< {TARGET_P95_MS:.0f} ms", f"{p95:.1f} ms", p95 < TARGET_P95_MS),
        Row("Submit + next item, p99", "—", f"{p99:.1f} ms", None),
        Row(
            "Submit + next item, throughput",
            f">= {TARGET_RATE:.0f} submissions/s",
            f"{rate:.0f} submissions/s",
            rate >= TARGET_RATE,
        ),
        Row("Submit + next item, errors", "0", str(len(errors)), not errors),
        Row(
            "Annotations stored = submits answered (no loss, no duplicate)",
            "equal",
            f"{stored:,} stored, {len(submitted):,} submitted",
            consistent,
        ),
        Row(
            "Annotate page with a new item (GET, one annotator, no other load), p50 / p95",
            "—",
            f"{page50:.1f} ms / {page95:.1f} ms",
            None,
        ),
    ]


METHOD = f"""\
**Annotation: submit + next item** (`bench/annotate_bench.py`). *Setup, not timed:* a pairwise project
on the likert5 scale (aspects `overall` and `helpful`, confidence asked, justification required with at
least 10 characters, two annotations per item, short markdown guidelines) gets {N_ITEMS:,} items from
the import benchmark's generator (seed {SEED}; a prompt of about 1,000 characters and two responses of
about 2,000, with markdown: paragraphs, lists, code blocks), imported with `import_file`; then
{N_ANNOTATORS} annotator accounts, members of the project. The accounts share one password hash made with
the project's default hasher (PBKDF2), so that the setup does not hash {N_ANNOTATORS} passwords; the server
checks every login in full. Last, `ANALYZE`, as autovacuum would within a minute or so of the import:
without it the run right after `make bench`'s import benchmark (whose 100,000 items stay in the database)
measures PostgreSQL planning with statistics that predate this project (the queue's queries then read the
project's whole index range). *Server:* gunicorn (`webapp.wsgi:application`) on 127.0.0.1 with
`HYBRIDPREF_MODE=production`, a generated `SECRET_KEY`, `DEBUG=0`, `ALLOWED_HOSTS=127.0.0.1`,
`SECURE_COOKIES=0` `SECURE_SSL_REDIRECT=0` (plain HTTP), the scratch database and Redis as the Celery broker: the
project's production settings, unchanged (database sessions, persistent database connections, the
cached template loader). It runs {WORKERS} `{WORKER_CLASS}` workers on the two cores: the work is CPU-bound (Python, and
PostgreSQL on the same two cores), but a worker waits for PostgreSQL for a few milliseconds of each request,
and a third worker uses those. Measured here, alternating runs with little CPU stolen by the hypervisor
(0-4 %): 2 workers 120 and 125 submissions/s, 3 workers 132 (and 151 in an earlier run); one run with 4
gave 90 (its stolen CPU not recorded). An earlier session found `gthread` with 2 workers of 1, 2 or 4
threads markedly worse (threads serialize on the GIL).
A sync worker closes the connection after each response, so the client
connects again for every request (on the loopback; that cost is in the figures). *Load:* this
benchmark's own process (not gunicorn's) runs {N_ANNOTATORS} threads, one simulated annotator each, with
its own `http.client` connection and cookie jar. Each logs in over HTTP (GET `/login/` for the CSRF
cookie, POST the credentials), GETs `/p/<slug>/annotate/` (the whole page: it claims the first item) and
then loops: *think* for a random time drawn uniformly from {THINK_S[0] * 1000:.0f} to
{THINK_S[1] * 1000:.0f} ms, then POST the annotation form to the form's `hx-post` URL exactly as the
page's htmx does (`HX-Request: true`, `HX-Target`, `HX-Trigger`, `HX-Current-URL`, the page's
`X-CSRFToken` header and the form's `csrfmiddlewaretoken`, `Origin`; fields `active_seconds`,
`pref-overall`, `pref-helpful`, `confidence`, `justification`, random valid answers), and read the next
assignment and its form from the `#workspace` partial that comes back. The think time is far shorter than
a person's (tens of seconds) so that {N_ANNOTATORS} annotators can offer the target rate: at zero latency
they would submit {N_ANNOTATORS / (sum(THINK_S) / 2):.0f} times a second, and still 200 with a mean
latency of {(N_ANNOTATORS / TARGET_RATE - sum(THINK_S) / 2) * 1000:.0f} ms; it is a closed loop, so a
slower server gets fewer submissions (and the latency then includes the wait for a free worker).
*Measured:* the wall time of each submit request on the client
(`time.perf_counter()` from before sending the request to the end of reading the response: saving the
annotation, claiming the next item and rendering it). The loop runs {WARMUP_S:.0f} s of warm-up, then
a {MEASURE_S:.0f} s window: p50/p95/p99 are over the submits that completed in the window (nearest
rank), submissions/s is their number over {MEASURE_S:.0f} s. An error is any submit that does not come
back as a 200 with "Saved." (or fails on the connection), counted over warm-up and window; the annotator
then goes on from the page it got. The CPU used during the window by gunicorn (master and workers), by
every PostgreSQL process on the machine and by the load generator (`/proc`, `getrusage`) is printed with
the results, with the share of the machine's CPU time that the hypervisor gave to other machines (steal,
`/proc/stat`): on this virtual machine it varied from 0 to 22 % between runs, and slows every figure.
*Checked afterwards:* the number of `HumanAnnotation` rows in the project equals the number
of submits that answered "Saved." (all of them distinct assignments), equals the number of submitted
assignments, and no item has more than its two annotations. *Annotate page:* then one annotator alone
(no other load) submits {PAGE_SAMPLES} times through the no-script path (a plain POST, redirected) and
GETs the annotate page after each: the page with a new item (claim and render, the whole HTML page but
not its static files), timed like the submits; p50/p95 over the {PAGE_SAMPLES}. *For scale* (from the
issue, not measured by `make bench`, which does not run Label Studio): Label Studio 1.23 on this machine
served 8 concurrent annotators at 25 submissions/s with a p95 of 568 ms, and its labeling page in 52 ms
plus 76 ms for the task API."""

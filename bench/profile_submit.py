"""CPU cost of one "submit + next item", measured in-process and deterministically (no HTTP, no concurrency).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/hybridpref .venv/bin/python bench/profile_submit.py \
        [-n 600] [--passes 3] [--items 4000] [--queries] [--profile] [--sections [MODULE:FUNCTION ...]]
    ... bench/profile_submit.py --compare /path/to/other/checkout "" ",CACHE_REDIS_URL=none" -n 300 --passes 8

Wall-clock benchmarks on a shared, busy machine are noisy; CPU time much less so. This script:

- re-creates a scratch database (DATABASE_URL's name + "_profile"), migrates it and sets up the annotate
  benchmark's project (bench.annotate_bench.setup, with fewer items by default) and its 32 annotators;
- loads Django with the production settings the benchmark's gunicorn gets (HYBRIDPREF_MODE=production,
  DEBUG=0, persistent connections, cached template loader, Redis from CELERY_BROKER_URL) and calls
  `webapp.wsgi.application` directly with WSGI environs built the way gunicorn builds them for the
  benchmark's htmx POST;
- logs the annotators in (sessions made as `Client.force_login` makes them: no PBKDF2), opens the annotate
  page for each, then submits round-robin (annotator 0, 1, ..., 31, 0, ...), so that items are shared by
  annotators as in the benchmark;
- reports, per submit + next, after a warm-up, for each pass of N: this process's CPU (`time.process_time`,
  around the WSGI call only: Django, the app, psycopg's client side) and the CPU of the PostgreSQL backend
  serving the connection (utime + stime of `pg_backend_pid()` from /proc: parse, plan, execute, commit);
  passes run one after the other, so a cost that grows with the data shows as a trend;
- `--queries`: then counts the statements per request and their wall time (`connection.execute_wrapper`,
  so without psycopg's connection health check), prints one request's statements with PostgreSQL's
  planning and execution time (EXPLAIN ANALYZE, rolled back), the plan the connection keeps for the
  queue's lock statement, and the connection's prepared statements (generic and custom plans);
- `--sections`: CPU per request spent inside the functions named (wrapped with a timer);
- `--profile`: a cProfile (CPU time) of the measured passes;
- `--compare SPEC ...`: one process per SPEC (a checkout and/or environment variables), each on its own
  scratch database, all set up first, then a pass of each in turn for --passes rounds: configurations
  measured under the same (changing) load; prints each one's best and median pass.

Not included: gunicorn's own HTTP parsing and socket work per request. One process serves every request,
but the benchmark's gunicorn has 3 workers (bench.annotate_bench.WORKERS), each with its own cache of rendered
markdown, and an item's second annotator lands on any: `--workers 3` (the default) gives each request, at
random (seeded), one of three markdown caches of its own (`--workers 1`: one process's; `--cold-markdown`:
none, the worst case).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUFFIX = "_profile"
_ASSIGNMENT = re.compile(rb'<section id="workspace" data-assignment="(\d*)"')
_ACTION = re.compile(rb'<form id="annotation-form"[^>]*?hx-post="([^"]+)"')
_FORM_TOKEN = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')
_HEADER_TOKEN = re.compile(rb'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'')


def _scratch(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/")) + SUFFIX
    return urlunsplit(parts._replace(path="/" + name)), name


def _recreate(url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    with psycopg.connect(
        host=parts.hostname or None,
        port=parts.port or None,
        user=unquote(parts.username or "") or None,
        password=unquote(parts.password or "") or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _pg_cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Browser:
    """A cookie jar and WSGI environs like gunicorn's for the benchmark's requests."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.cookies: dict[str, str] = {}

    def environ(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        env: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "RAW_URI": path,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "40000",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_ACCEPT": "text/html",
            "HTTP_CONNECTION": "keep-alive",
        }
        if body:
            env["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
            env["CONTENT_LENGTH"] = str(len(body))
            env["HTTP_ORIGIN"] = "http://127.0.0.1:8000"
        if self.cookies:
            env["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for key, value in headers.items():
            env["HTTP_" + key.upper().replace("-", "_")] = value
        return env

    def request(
        self,
        method: str,
        path: str,
        fields: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        clock: list[float] | None = None,
    ) -> tuple[int, bytes]:
        env = self.environ(method, path, urlencode(fields).encode() if fields else b"", headers or {})
        status: list[str] = []
        response_headers: list[tuple[str, str]] = []

        def start_response(s: str, h: list[tuple[str, str]], exc_info: Any = None) -> None:
            status.append(s)
            response_headers.extend(h)

        started = time.process_time()
        result = self.app(env, start_response)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        if clock is not None:
            clock.append(time.process_time() - started)
        for name, value in response_headers:
            if name.lower() == "set-cookie":
                jar: SimpleCookie = SimpleCookie()
                jar.load(value)
                for key, morsel in jar.items():
                    if morsel["max-age"] == "0":
                        self.cookies.pop(key, None)
                    else:
                        self.cookies[key] = morsel.value
        return int(status[0].split()[0]), body


class Annotator:
    def __init__(self, app: Callable[..., Any], user: Any, slug: str, seed: int) -> None:
        import random

        self.browser = Browser(app)
        self.user = user
        self.slug = slug
        self.rng = random.Random(seed)
        self.header_token = self.form_token = self.action = ""

    def login(self) -> None:
        """A session as force_login makes one (the login view's PBKDF2 check is not what is measured)."""
        from importlib import import_module

        from django.conf import settings
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend

        store = import_module(settings.SESSION_ENGINE).SessionStore()
        store[SESSION_KEY] = str(self.user.pk)
        # The first backend that can load a session's user (the login rate limiter cannot), as force_login picks.
        store[BACKEND_SESSION_KEY] = next(
            path for path in settings.AUTHENTICATION_BACKENDS if hasattr(load_backend(path), "get_user")
        )
        store[HASH_SESSION_KEY] = self.user.get_session_auth_hash()
        store.save()
        self.browser.cookies[settings.SESSION_COOKIE_NAME] = store.session_key

    def open_page(self) -> None:
        status, page = self.browser.request("GET", f"/p/{self.slug}/annotate/")
        token = _HEADER_TOKEN.search(page)
        if status != 200 or token is None:
            raise SystemExit(f"GET annotate page: {status}\n{page[:2000]!r}")
        self.header_token = token.group(1).decode()
        self._read(page)

    def _read(self, page: bytes) -> None:
        action, token = _ACTION.search(page), _FORM_TOKEN.search(page)
        if action is None or token is None or _ASSIGNMENT.search(page) is None:
            raise SystemExit(f"no next item in the page:\n{page[:3000]!r}")
        self.action, self.form_token = action.group(1).decode(), token.group(1).decode()

    def submit(self, clock: list[float] | None = None) -> None:
        from webapp import scheme as sch

        rng = self.rng
        fields = [
            ("csrfmiddlewaretoken", self.form_token),
            ("active_seconds", f"{rng.uniform(20, 120):.1f}"),
            ("pref-overall", rng.choice(sch.LIKERT5_LABELS)),
            ("pref-helpful", rng.choice(sch.LIKERT5_LABELS)),
            ("confidence", rng.choice(sch.CONFIDENCE_LABELS)),
            ("justification", "B is clearer and gives a working example."),
        ]
        headers = {
            "HX-Request": "true",
            "HX-Current-URL": f"http://127.0.0.1:8000/p/{self.slug}/annotate/",
            "HX-Target": "workspace",
            "HX-Trigger": "annotation-form",
            "X-CSRFToken": self.header_token,
        }
        status, page = self.browser.request("POST", self.action, fields, headers, clock)
        if status != 200 or b'role="status">Saved.</p>' not in page:
            raise SystemExit(f"submit: HTTP {status}\n{page[:3000]!r}")
        self._read(page)


DEFAULT_SECTIONS = [
    "django.contrib.auth:get_user",
    "django.contrib.sessions.backends.cached_db:SessionStore.load",
    "django.contrib.sessions.backends.db:SessionStore.load",
    "django.contrib.auth.backends:ModelBackend.get_user",
    "django.middleware.csrf:CsrfViewMiddleware.process_view",
    "webapp.selectors:project_access",
    "webapp.services.annotations:submit_and_claim_next",
    "webapp.services.annotations:_submit",
    "webapp.services.queue:try_claim_next",
    "webapp.services.queue:claim_next",
    "webapp.views_annotate:workspace_context",
    "webapp.views_annotate:_render",
    "webapp.markdown:_render",
    "django.db.backends.utils:CursorWrapper.execute",
]


def _wrap_sections(names: list[str]) -> dict[str, list[Any]]:
    """Wrap each MODULE:FUNCTION (or MODULE:Class.method) with a CPU timer; returns {name: [seconds, calls]}."""
    import functools
    import importlib

    counters: dict[str, list[Any]] = {}
    for name in names or DEFAULT_SECTIONS:
        module_name, _, qualname = name.partition(":")
        owner: Any = importlib.import_module(module_name)
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, attr)
        counter = counters[name] = [0.0, 0]

        def timed(*a: Any, __f: Any = original, __c: list[Any] = counter, **kw: Any) -> Any:
            start = time.process_time()
            try:
                return __f(*a, **kw)
            finally:
                __c[0] += time.process_time() - start
                __c[1] += 1

        setattr(owner, attr, functools.wraps(original)(timed))
    return counters


def _plan_and_run_times(connection: Any, statements: list[tuple[str, Any]]) -> list[str]:
    """PostgreSQL's planning and execution times of each statement, from EXPLAIN ANALYZE in a transaction
    rolled back (each in a savepoint: a statement run again may fail, e.g. an insert already made)."""
    from django.db import DatabaseError, transaction

    out = []
    with transaction.atomic():
        for sql, params in statements:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) " + sql, params)
                    lines = [line for (line,) in cursor.fetchall()]
                times = {line.split(":")[0]: float(line.split()[2]) for line in lines if line.endswith(" ms")}
                out.append(f"plan {times.get('Planning Time', 0):5.2f} run {times.get('Execution Time', 0):5.2f}")
            except DatabaseError as exc:
                out.append(f"({type(exc).__name__})".ljust(20))
        transaction.set_rollback(True)
    return out


def _explain_prepared(connection: Any, sql: str, params: dict[str, Any]) -> str:
    """EXPLAIN ANALYZE of the statement PostgreSQL has prepared for `sql` on this connection: the plan the
    requests use (a generic plan may date from other statistics), run with `params`."""
    import re

    from psycopg import ClientCursor

    names: list[str] = []

    def number(match: re.Match[str]) -> str:  # as psycopg numbers %(name)s placeholders
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    text = re.sub(r"%\((\w+)\)s", number, sql)
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE statement = %s", [text])
        row = cursor.fetchone()
    if row is None:
        return "  (not prepared on this connection)"
    raw = ClientCursor(connection.connection)
    args = ", ".join(["%s"] * len(names))
    raw.execute(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) EXECUTE {row[0]}({args})", [params[n] for n in names])
    plan = "\n".join(f"  {line}" for (line,) in raw.fetchall())
    connection.connection.rollback()  # the EXPLAIN ran the statement: let go of its row locks
    return plan


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=600, help="measured submits per pass (default 600)")
    parser.add_argument("--passes", type=int, default=1, help="measured passes of N (default 1)")
    parser.add_argument("--warmup", type=int, default=96, help="submits before measuring (default 96)")
    parser.add_argument("--items", type=int, default=4000, help="items in the project (default 4000)")
    parser.add_argument(
        "--other-items",
        type=int,
        default=0,
        help="items of another project, imported first (as make bench leaves it: 100000)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the measured passes")
    parser.add_argument("--queries", action="store_true", help="count and time the statements per request")
    parser.add_argument("--cold-markdown", action="store_true", help="clear the markdown cache before each request")
    parser.add_argument("--workers", type=int, default=3, help="web workers' markdown caches to spread requests over")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (default tottime; or cumulative)")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument(
        "--sections",
        nargs="*",
        metavar="MODULE:FUNCTION",
        help="CPU per request inside these functions (wrapped with a timer; default: the main steps)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="SPEC",
        help="A/B: one process per SPEC ([DIR][,VAR=VALUE...]: a checkout, this one by default, and environment"
        " variables), all set up first, then one pass of N after the other, round-robin, --passes rounds",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> int:
    args = _args()
    if args.compare:
        return compare(args)
    if args.root != ROOT:  # another checkout's code (compare), ahead of this one's
        sys.path.insert(0, str(args.root))
        os.chdir(args.root)
    out = sys.stderr if args.serve else sys.stdout

    def say(*parts: Any) -> None:
        print(*parts, file=out, flush=True)

    url, name = _scratch(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hybridpref"))
    tmp = Path(tempfile.mkdtemp(prefix="hybridpref-profile-"))
    os.environ.update(
        {
            "HYBRIDPREF_MODE": "production",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_COOKIES": "0",
            "SECURE_SSL_REDIRECT": "0",  # plain HTTP on 127.0.0.1, no TLS proxy in front
            "DATABASE_URL": url,
            "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/13"),
            "HYBRIDPREF_DATA_DIR": str(tmp / "data"),
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "webapp.settings",
        }
    )
    _recreate(url, name)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=args.root, check=True, stdout=out
    )

    import bench.annotate_bench as ab

    ab.N_ITEMS = args.items
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from webapp import markdown as wmd
    from webapp.wsgi import application  # django.setup(), as gunicorn's worker does

    # A cache key prefix of this run's own: nothing another run left in Redis (cached sessions) is found.
    settings.CACHES["default"]["KEY_PREFIX"] = f"profile-{secrets.token_hex(6)}"
    started = time.perf_counter()
    if args.other_items:  # the state `make bench` leaves before its annotate benchmark: another, bigger project
        from bench.import_bench import generate
        from webapp import scheme as sch
        from webapp.services.imports import import_file
        from webapp.services.projects import create_project

        other = create_project(slug="profile-other", name="Other", kind=sch.PAIRWISE, scale=sch.LIKERT5)
        generate(tmp / "other.jsonl", n=args.other_items, seed=1)
        import_file(other, tmp / "other.jsonl", fmt="native")
        (tmp / "other.jsonl").unlink()
    _, accounts = ab.setup(tmp)
    say(f"setup: {args.items} items, {len(accounts)} annotators in {time.perf_counter() - started:.1f} s")
    users = {u.username: u for u in get_user_model().objects.filter(username__in=[a for a, _ in accounts])}
    annotators = [Annotator(application, users[username], ab.SLUG, k) for k, (username, _) in enumerate(accounts)]
    for a in annotators:
        a.login()
        a.open_page()
    say(f"settings: sessions {settings.SESSION_ENGINE}; caches {settings.CACHES['default']['BACKEND']}")
    done = 0

    import random
    from collections import OrderedDict

    from webapp.templatetags import hybridpref

    pick = random.Random(7)
    n_workers = max(1, args.workers)
    if hasattr(wmd, "_LRU"):  # this checkout's markdown module: swap its process cache
        worker_caches: list[Any] = [wmd._LRU(512) for _ in range(n_workers)]

        def use_worker(k: int) -> None:
            wmd._cache = worker_caches[k]
            if args.cold_markdown:
                wmd._cache.clear()
    else:  # an older one (an lru_cache): the template filter's renderer, with a cache per simulated worker
        old_caches: list[OrderedDict[str, str]] = [OrderedDict() for _ in range(n_workers)]
        current: list[OrderedDict[str, str]] = [old_caches[0]]

        def cached_render(text: str) -> str:
            text = text or ""
            if len(text) > 16_000:
                return str(wmd._render(text))
            html = current[0].get(text)
            if html is None:
                html = current[0][text] = wmd._render(text)
                while len(current[0]) > 512:
                    current[0].popitem(last=False)
            return html

        hybridpref.render_markdown = cached_render  # type: ignore[assignment]

        def use_worker(k: int) -> None:
            current[0] = old_caches[k]
            if args.cold_markdown:
                current[0].clear()

    def run(count: int, clock: list[float] | None) -> None:
        nonlocal done
        for k in range(done, done + count):
            use_worker(pick.randrange(n_workers))
            annotators[k % len(annotators)].submit(clock)
        done += count

    sections = _wrap_sections(args.sections) if args.sections is not None else {}
    run(args.warmup, None)
    gc_time = [0.0, 0.0, 0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_time[1] = time.process_time()
        else:
            gc_time[0] += time.process_time() - gc_time[1]
            gc_time[2] += info["generation"] == 2

    gc.callbacks.append(on_gc)

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    tick = os.sysconf("SC_CLK_TCK")
    profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not waits

    def measure() -> tuple[float, float]:
        # The connection is persistent, but closed once older than CONN_MAX_AGE: a pass that saw it change
        # did not measure PostgreSQL, and is run again.
        while True:
            run(1, None)
            backend = backend_pid()
            clock: list[float] = []
            gc_time[:] = [0.0, 0.0, 0]
            pg0, wall0 = _pg_cpu_ticks(backend), time.perf_counter()
            if profiler:
                profiler.enable()
            run(args.n, clock)
            if profiler:
                profiler.disable()
            try:
                pg1, wall1 = _pg_cpu_ticks(backend), time.perf_counter()
            except OSError:
                continue
            if backend_pid() == backend:
                break
        clock.sort()
        py_ms = sum(clock) / len(clock) * 1000
        pg_ms = (pg1 - pg0) / tick / args.n * 1000
        say(
            f"{args.n} submits (+ next item): Python CPU {py_ms:.2f} ms/request "
            f"(median {clock[len(clock) // 2] * 1000:.2f}, p90 {clock[int(len(clock) * 0.9)] * 1000:.2f})"
            f"{' [under cProfile]' if profiler else ''}; PostgreSQL backend CPU {pg_ms:.2f} ms/request; "
            f"total {py_ms + pg_ms:.2f} ms; wall {(wall1 - wall0) / args.n * 1000:.2f} ms/request; "
            f"gc {gc_time[0] / args.n * 1000:.3f} ms/request ({gc_time[2]} full collections)"
        )
        return py_ms, pg_ms

    if args.serve:  # compare(): a pass on each PASS line, its result as one line on stdout
        print("READY", flush=True)
        for line in sys.stdin:
            if line.strip() != "PASS":
                break
            py_ms, pg_ms = measure()
            print(f"RESULT {py_ms:.4f} {pg_ms:.4f}", flush=True)
        connection.close()
        return 0

    for counter in sections.values():
        counter[:] = [0.0, 0]
    results = [measure() for _ in range(args.passes)]
    if sections:
        n = args.n * args.passes
        print("CPU per request inside (nested sections count in each):")
        for name, (seconds, calls) in sections.items():
            print(f"  {seconds / n * 1000:6.3f} ms  {calls / n:5.2f} calls  {name}")
    gc.callbacks.remove(on_gc)
    if len(results) > 1:
        best = min(results, key=sum)
        print(
            f"best of {len(results)} passes: Python {best[0]:.2f} + PostgreSQL {best[1]:.2f} = {sum(best):.2f} ms "
            f"per submit + next (load average now {os.getloadavg()[0]:.2f})"
        )

    if args.queries:
        statements: list[tuple[str, float]] = []

        statements_params: list[tuple[str, Any]] = []

        def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            t = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                statements.append((sql, time.perf_counter() - t))
                statements_params.append((sql, params))

        n_q = 100
        with connection.execute_wrapper(capture):
            run(n_q, None)
            total = len(statements)
            db_ms = sum(t for _, t in statements) * 1000
            statements.clear()
            statements_params.clear()
            run(1, None)
        print(f"statements: {total / n_q:.2f} per request, {db_ms / n_q:.2f} ms wall in them per request")
        print("one request's statements (wall in the request; PostgreSQL's planning and execution, run again):")
        for (sql, t), timing in zip(statements, _plan_and_run_times(connection, statements_params), strict=True):
            print(f"  {t * 1000:6.2f} ms  {timing}  {' '.join(sql.split())[:200]}")
        last: dict[str, Any] = {}

        def capture_lock(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            if sql.lstrip().startswith("WITH found AS"):
                last["sql"], last["params"] = sql, params
            return execute(sql, params, many, context)

        with connection.execute_wrapper(capture_lock):
            run(3, None)
        if last:
            print("the queue's lock statement, with the plan this connection keeps for it:")
            print(_explain_prepared(connection, last["sql"], last["params"]))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT generic_plans, custom_plans, statement FROM pg_prepared_statements"
                " ORDER BY generic_plans + custom_plans DESC"
            )
            print(
                "prepared statements of this connection (generic plans, custom plans: a custom plan is planned anew):"
            )
            for generic, custom, statement in cursor.fetchall():
                print(f"  {generic:6d} {custom:6d}  {' '.join(statement.split())[:200]}")

    if profiler:
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.sort_stats(args.sort).print_stats(args.top)
        print(stream.getvalue())
    connection.close()
    return 0


def compare(args: argparse.Namespace) -> int:
    """Several configurations measured in turns, so that they share the machine's changing load."""
    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hybridpref")
    children: list[tuple[str, subprocess.Popen[str]]] = []
    for k, spec in enumerate(args.compare):
        root, *assignments = spec.split(",")
        env = dict(os.environ)
        env.update(a.split("=", 1) for a in assignments)
        parts = urlsplit(env.get("DATABASE_URL", base_url))
        env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"{parts.path}_{k}"))  # a scratch database each
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "-n", str(args.n)]
        cmd += ["--warmup", str(args.warmup), "--items", str(args.items), "--root", str(Path(root or ROOT).resolve())]
        if args.cold_markdown:
            cmd.append("--cold-markdown")
        cmd += ["--workers", str(args.workers)]
        child = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if child.stdout is None or child.stdout.readline().strip() != "READY":
            raise SystemExit(f"{spec}: the process did not start")
        children.append((spec or "(this checkout)", child))
    results: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in children}
    for round_ in range(args.passes):
        order = children[round_ % len(children) :] + children[: round_ % len(children)]
        for label, child in order:
            assert child.stdin is not None
            assert child.stdout is not None
            child.stdin.write("PASS\n")
            child.stdin.flush()
            _, py_ms, pg_ms = child.stdout.readline().split()
            results[label].append((float(py_ms), float(pg_ms)))
    for _, child in children:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    print(f"\n{args.passes} rounds of {args.n} submits each (load average now {os.getloadavg()[0]:.2f})")
    for label, rows in results.items():
        totals = sorted(sum(r) for r in rows)
        best = min(rows, key=sum)
        median = sorted(rows, key=sum)[len(rows) // 2]
        print(
            f"  {label}: best Python {best[0]:.2f} + PostgreSQL {best[1]:.2f} = {totals[0]:.2f} ms;"
            f" median {median[0]:.2f} + {median[1]:.2f} = {sum(median):.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

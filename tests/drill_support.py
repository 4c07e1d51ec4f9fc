"""What the failure drills (tests/test_drill_*.py, docs/operations.md "Failure drills") start and stop.

Everything a drill breaks is its own: a PostgreSQL cluster made with initdb in a temporary directory, a
redis-server on a free port, gunicorn and Celery worker processes. The machine's shared PostgreSQL and
Redis are never stopped; the test database on the shared server is only read and written.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from bench.annotate_bench import SLUG, Annotator, Browser, Failure, _free_port, _log_tail

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_BIN = Path(os.environ.get("HYBRIDPREF_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server")
PASSWORD = "drill-password-" + "x" * 8

free_port = _free_port
__all__ = ["SLUG", "Annotator", "Browser", "Failure", "free_port"]


# --- what a drill needs ---------------------------------------------------------------------------


def _private_postgres_missing() -> str:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return f"PostgreSQL server binaries (initdb, pg_ctl) not found in {PG_BIN} (set HYBRIDPREF_PG_BIN)"
    if os.geteuid() != 0:
        return "a private PostgreSQL cluster is made with `runuser -u postgres`, which needs root"
    if shutil.which("runuser") is None:
        return "runuser is missing"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres OS user to run initdb as"
    return ""


needs_private_postgres = pytest.mark.skipif(
    bool(_private_postgres_missing()), reason=_private_postgres_missing() or "ok"
)
needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not on PATH")
needs_pg_dump = pytest.mark.skipif(
    shutil.which("pg_dump") is None or shutil.which("pg_restore") is None, reason="pg_dump/pg_restore not on PATH"
)


# --- private Redis --------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server on a free port, without persistence: a stop loses everything it held."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        assert REDIS_SERVER is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--daemonize", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start: {self.log()}")
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
        except redis.exceptions.RedisError:
            return False

    def kill(self) -> None:
        """Down hard (SIGKILL): connections are refused at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        """Hung (SIGSTOP): connections open, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.kill()


# --- private PostgreSQL ---------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb as the postgres OS user), on a free port on 127.0.0.1."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.base = Path(tempfile.mkdtemp(prefix="hp-drill-pg-", dir="/tmp"))
        shutil.chown(self.base, "postgres", "postgres")
        self.data = self.base / "data"
        self.logfile = self.base / "postgres.log"
        self.port = free_port()

    def _pg(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", "postgres", "--", str(PG_BIN / args[0]), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr}\n{self.log()}")
        return done

    def init(self) -> PrivatePostgres:
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        return self

    def _options(self) -> str:
        # fsync only matters for a machine that loses power; restarts here are clean or fast shutdowns.
        return f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", self._options(), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._pg(
            "pg_ctl", "-D", str(self.data), "-m", mode, "-l", str(self.logfile), "-o", self._options(), "-w", "restart"
        )

    def url(self, db: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        return psql(self.url(db), sql)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")[-3000:] if self.logfile.exists() else ""

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.init()
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def psql(url: str, sql: str) -> str:
    """One statement's rows as psql prints them unaligned (-tA); raises on an error."""
    done = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql[:60]!r}: {done.stderr}")
    return done.stdout.strip()


# --- Django, gunicorn and Celery in other processes -------------------------------------------------


def database_url() -> str:
    """The URL of the database this test process uses (pytest-django's test database)."""
    from django.db import connection

    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or '5432'}/{quote(db['NAME'], safe='')}"


def process_env(database: str, broker: str, **extra: str) -> dict[str, str]:
    """The environment of a manage.py command or a worker in test mode on these services."""
    env = {
        **os.environ,
        "HYBRIDPREF_MODE": "test",
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    env.pop("CACHE_REDIS_URL", None)
    env.update(extra)
    return env


def manage(
    *args: str, env: dict[str, str], timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def python(code: str, *, env: dict[str, str], timeout: float = 120) -> str:
    """Run code after django.setup() in another process; returns its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", "import django\ndjango.setup()\n" + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"python -c failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def start_gunicorn(
    tmp: Path, *, database: str, broker: str, cache: str | None = None, workers: int = 2
) -> tuple[subprocess.Popen[bytes], int]:
    """gunicorn in production mode, as bench/annotate_bench.py starts it; returns (process, port)."""
    port = free_port()
    env = {
        **os.environ,
        "HYBRIDPREF_MODE": "production",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_COOKIES": "0",
        "SECURE_SSL_REDIRECT": "0",  # plain HTTP on the loopback, no TLS proxy in front
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "HYBRIDPREF_DATA_DIR": str(tmp / "data"),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("REDIS_URL", None)
    env.pop("CACHE_REDIS_URL", None)
    if cache is not None:
        env["CACHE_REDIS_URL"] = cache
    cmd = [str(BIN / "gunicorn"), "webapp.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    cmd += ["--worker-class", "sync", "--workers", str(workers), "--timeout", "60", "--log-level", "warning"]
    cmd += ["--error-logfile", str(tmp / "gunicorn.log")]
    with (tmp / "gunicorn.out").open("ab") as out:  # the app's own log (Django logs to stderr)
        server = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.returncode}: {_log_tail(tmp)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/login/")
            if conn.getresponse().status == 200:
                conn.close()
                return server, port
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"gunicorn did not answer within 60 s: {_log_tail(tmp)}")


def gunicorn_log(tmp: Path) -> str:
    """gunicorn's error log and the app's output, the last few kB of each."""
    out = tmp / "gunicorn.out"
    app = out.read_text(errors="replace")[-3000:] if out.exists() else ""
    return f"{_log_tail(tmp)}\n--- app output ---\n{app}"


def stop(proc: subprocess.Popen[Any] | None, *, timeout: float = 20) -> None:
    """SIGTERM the process's group (it was started in a session of its own), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Worker:
    """A Celery worker in its own process group (so that a SIGKILL takes its children with it)."""

    def __init__(self, tmp: Path, *, database: str, broker: str, name: str = "w1", **transport: Any) -> None:
        self.log = tmp / f"worker-{name}-{secrets.token_hex(3)}.log"
        env = process_env(database, broker, LOG_LEVEL="INFO")
        # tests/drill_celery.py applies these on top of the project's broker settings.
        env["DRILL_BROKER_TRANSPORT_OPTIONS"] = json.dumps(transport)
        cmd = [str(BIN / "celery"), "-A", "tests.drill_celery", "worker", "--pool=solo", "--concurrency=1"]
        cmd += ["-Q", "celery", "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"]
        cmd += ["-n", f"drill-{name}-{secrets.token_hex(3)}@localhost"]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 60) -> Worker:
        deadline = time.monotonic() + timeout
        while " ready." not in self.output():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker was not ready within {timeout} s:\n{self.output()}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: no warm shutdown, no ack, no requeue."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop(self.proc)


@contextlib.contextmanager
def celery_broker(url: str) -> Iterator[Any]:
    """This process's Celery app sends to `url` for a while (the drills' private Redis)."""
    from webapp.celery import app

    def forget_connections() -> None:
        app._pool = None
        amqp = app.__dict__.get("amqp")
        if amqp is not None:
            amqp._producer_pool = None

    # Celery reads CELERY_BROKER_URL from the environment before its own settings.
    old, old_env = app.conf.get("broker_url"), os.environ.get("CELERY_BROKER_URL")
    forget_connections()
    app.conf.broker_url = os.environ["CELERY_BROKER_URL"] = url
    try:
        yield app
    finally:
        forget_connections()
        app.conf.broker_url = old
        if old_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = old_env


# --- an annotation project, and annotators over HTTP -----------------------------------------------


def seed_annotation_project(n_items: int = 60, n_annotators: int = 3, password: str = PASSWORD) -> dict[str, Any]:
    """The benchmark's kind of project (SLUG), with items and annotator accounts, in this process's database."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from bench.import_bench import generate
    from webapp import scheme as sch
    from webapp.models import AnnotatorProfile, Membership
    from webapp.services.imports import import_file
    from webapp.services.projects import create_project

    project = create_project(
        slug=SLUG,
        name="Drill",
        kind=sch.PAIRWISE,
        scale=sch.LIKERT5,
        aspects=["overall", "helpful"],
        ask_confidence=True,
        justification_required=True,
        justification_min_length=10,
        overlap_normal=2,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.jsonl"
        generate(path, n=n_items, seed=7)
        import_file(project, path, fmt="native")
    hashed = make_password(password)
    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        [user_model(username=f"drill-annotator-{k}", password=hashed) for k in range(n_annotators)]
    )
    AnnotatorProfile.objects.bulk_create([AnnotatorProfile(user=u) for u in users])
    Membership.objects.bulk_create([Membership(project=project, user=u, role=Membership.ANNOTATOR) for u in users])
    return {"project_id": project.pk, "usernames": [u.username for u in users]}


def annotators(port: int, usernames: list[str], seed: int = 1, password: str = PASSWORD) -> list[Annotator]:
    import random

    out = []
    for k, name in enumerate(usernames):
        a = Annotator(name, password, Browser(port), random.Random(seed + k))
        a.login()
        a.open_page()
        out.append(a)
    return out


def htmx_submit(a: Annotator, fields: list[tuple[str, str]]) -> tuple[int, dict[str, str], bytes]:
    """The annotate form's htmx POST, as bench/annotate_bench.py sends it; connection errors raise."""
    headers = {
        "HX-Request": "true",
        "HX-Current-URL": f"{a.browser.origin}/p/{SLUG}/annotate/",
        "HX-Target": "workspace",
        "HX-Trigger": "annotation-form",
        "X-CSRFToken": a.header_token,
    }
    return a.browser.request("POST", a.action, fields, headers)


def timed_page(a: Annotator) -> float:
    """Load the annotate page (a new GET each time); returns seconds."""
    return a.open_page()

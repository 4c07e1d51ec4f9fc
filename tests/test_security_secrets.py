"""Secrets never logged, printed or stored: a judge's API key, the database password, login passwords.

- An OpenAI-compatible judge whose key comes from the environment runs against tests/fake_openai.py
  answering errors that echo the Authorization header back (401, a 500 whose body is cut where the key
  is, a 429, a 200 whose verdict or whose invalid JSON holds the key), with every logger at DEBUG: no
  piece of the key (10 characters or more) is in any log record, on stdout/stderr, or in any stored
  judgment (error, raw output, rationale, details) or the judge's configuration.
- Management commands that read the settings (check, check --deploy, showmigrations, a database that
  cannot be reached, a DATABASE_URL with a bad option) never print the database URL's password.
- A failed login logs no password.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.factories import ItemFactory, ProjectFactory, UserFactory
from tests.fake_openai import FakeOpenAI, Received, Reply, chat_reply, error_reply
from webapp.models import Judge, JudgeRun, Judgment
from webapp.services import judging

ROOT = Path(__file__).resolve().parent.parent
KEY_VAR = "HP_SECURITY_TEST_JUDGE_KEY"


def fragments(secret: str, size: int = 10) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def leaks(secret: str, text: str) -> list[str]:
    return [f for f in fragments(secret) if f in text]


def run_all(run: JudgeRun) -> None:
    """What the workers do (tests/test_judging.py): every chunk with its retries, the last try final."""
    for chunk in judging.run_chunks(run):
        for attempt in range(judging.MAX_ATTEMPTS):
            result = judging.judge_chunk(run.pk, chunk, final=attempt == judging.MAX_ATTEMPTS - 1)
            if not result.retryable:
                break
    judging.finish_chunk_after_last_try(run.pk)


def _cut_at_500(req: Received) -> Reply:
    """A body whose first 500 characters end inside the key (the error keeps 500 characters)."""
    auth = req.headers.get("authorization", "")
    return Reply(502, "upstream said: " + "e" * 468 + auth + " ...and more", {"Content-Type": "text/plain"})


def _invalid_json(req: Received) -> Reply:
    """A 200 whose body is not JSON; the error shows its first 200 bytes, the key among them and past them."""
    auth = req.headers.get("authorization", "")
    return Reply(200, "<html>proxy page " + "p" * 150 + auth + "</html>")


SCRIPTS: dict[str, Callable[[Received], Reply]] = {
    "401 echoing the header": lambda req: error_reply(
        401, f"Incorrect API key provided: {req.headers['authorization']}"
    ),
    "500 cut inside the key": _cut_at_500,
    "429 echoing the header": lambda req: error_reply(429, f"slow down {req.headers['authorization']}", retry_after=0),
    "200 verdict holding the key": lambda req: chat_reply(f"I saw {req.headers['authorization']} and cannot decide"),
    "200 invalid JSON holding the key": _invalid_json,
}


@pytest.mark.django_db
@pytest.mark.parametrize("scenario", list(SCRIPTS))
def test_a_judges_api_key_is_in_no_log_no_output_and_no_stored_text(
    scenario: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    key = "sk-test-" + secrets.token_urlsafe(32)
    monkeypatch.setenv(KEY_VAR, key)
    project = ProjectFactory(slug="secret-keys", aspects=["overall"])
    ItemFactory(project=project, responses=["Paris.", "The capital of France is Paris."])
    caplog.set_level(logging.DEBUG)  # every logger
    with FakeOpenAI(script=SCRIPTS[scenario]) as fake:
        judge = judging.create_judge(
            name="keyed",
            backend="openai",
            model="fake-judge",
            config={"base_url": fake.url, "api_key_env": KEY_VAR, "max_retries": 0, "structured": "off"},
        )
        run = judging.start_run(project, judge, enqueue=False)
        run_all(run)
        assert fake.chat_requests, "the judge never called the server"
        assert fake.chat_requests[0].headers["authorization"] == f"Bearer {key}"  # the key did go out
    judgments = list(Judgment.objects.filter(judge=judge))
    assert judgments
    assert all(j.status == "failed" for j in judgments), [(j.status, j.error) for j in judgments]
    stored = json.dumps(
        [[j.error, j.raw_output, j.rationale, j.details, j.labels] for j in judgments]
        + [Judge.objects.get(pk=judge.pk).config]
    )
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    out, err = capfd.readouterr()
    assert not leaks(key, stored), f"stored: {leaks(key, stored)[:3]}"
    assert not leaks(key, logged), f"logged: {leaks(key, logged)[:3]}"
    assert not leaks(key, out + err), "printed"
    assert any("***" in j.error or "***" in j.raw_output for j in judgments), "the echo was not scrubbed but lost?"


# --- the database password ---------------------------------------------------------------------------


def _env(url: str, mode: str = "test", **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "HYBRIDPREF_MODE": mode,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        **extra,
    }


def _db_url(password: str, host: str = "127.0.0.1", port: int = 5432, query: str = "") -> str:
    # The server's own "postgres" database: DATABASE_URL's may not exist (the suite runs in test_<name>),
    # and these commands only need to connect.
    return f"postgres://postgres:{password}@{host}:{port}/postgres{query}"


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("what", "args", "url_parts", "ok"),
    [
        ("check", ("check",), {}, True),
        ("check --database", ("check", "--database", "default"), {}, True),
        ("showmigrations", ("showmigrations", "webapp"), {}, True),
        ("an unreachable database", ("showmigrations", "webapp"), {"port": 1}, False),
        ("a bad DATABASE_URL option", ("check",), {"query": "?prepare_threshold=soon"}, False),
    ],
)
def test_management_commands_never_print_the_database_password(
    what: str, args: tuple[str, ...], url_parts: dict[str, Any], ok: bool
) -> None:
    password = "Db-Pw-" + secrets.token_hex(8)
    proc = manage(_env(_db_url(password, **url_parts)), *args)
    assert (proc.returncode == 0) is ok, proc.stderr[-2000:]
    assert password not in proc.stdout + proc.stderr, what
    assert not leaks(password, proc.stdout + proc.stderr)


def test_check_deploy_in_production_never_prints_the_password_or_the_secret_key(tmp_path: Path) -> None:
    password, key = "Db-Pw-" + secrets.token_hex(8), secrets.token_urlsafe(50)
    env = _env(
        _db_url(password),
        mode="production",
        SECRET_KEY=key,
        ALLOWED_HOSTS="prefs.example.org",
        DEBUG="0",
        HYBRIDPREF_DATA_DIR=str(tmp_path),
    )
    proc = manage(env, "check", "--deploy")
    assert proc.returncode == 0, proc.stderr
    assert password not in proc.stdout + proc.stderr
    assert key not in proc.stdout + proc.stderr


@pytest.mark.django_db
def test_a_failed_login_logs_no_password(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LOGIN_FAILURES_PER_USERNAME = 2
    UserFactory(username=f"pw-{secrets.token_hex(3)}")
    wrong = "Wrong-" + secrets.token_hex(8)
    caplog.set_level(logging.DEBUG)
    client = Client(REMOTE_ADDR=f"203.0.113.9-{secrets.token_hex(4)}")
    name = f"nobody-{secrets.token_hex(3)}"
    try:
        for _ in range(3):  # the second failure reaches the limit, which is logged
            client.post("/login/", {"username": name, "password": wrong})
        assert any("login rate limit" in r.getMessage() for r in caplog.records)
        assert wrong not in caplog.text + "\n".join(str(r.args) for r in caplog.records)
    finally:
        from webapp import ratelimit_login

        ratelimit_login.reset_username(name)

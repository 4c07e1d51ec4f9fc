"""Production settings: `manage.py check --deploy` clean, unsafe values refused, and the headers and cookies
of real responses (tests/test_config.py covers DEBUG, missing or short SECRET_KEY and empty ALLOWED_HOSTS).

Production runs in a fresh process, with only the environment given here (as tests/test_config.py does);
the database it names is this suite's PostgreSQL, reachable, with a password in its URL that must never
be printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.test_security_support import template_handlers
from webapp.api import create_token

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = secrets.token_urlsafe(50)  # 67 random characters
DB_PASSWORD = "Db-Pw-" + secrets.token_hex(8)


def production_env(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    db = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hybridpref")
    scheme, rest = db.split("://", 1)
    user_host = rest.split("@", 1)
    user = user_host[0].split(":", 1)[0] if len(user_host) == 2 else "postgres"
    env: dict[str, str | None] = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "HYBRIDPREF_MODE": "production",
        "HYBRIDPREF_DATA_DIR": str(tmp_path / "data"),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "prefs.example.org",
        "SECRET_KEY": STRONG_KEY,
        "SECURE_COOKIES": "1",
        # The server's own "postgres" database (DATABASE_URL's may not exist; /healthz only connects).
        "DATABASE_URL": f"{scheme}://{user}:{DB_PASSWORD}@{user_host[-1].rsplit('/', 1)[0]}/postgres",
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


# --- check --deploy ------------------------------------------------------------------------------------


def test_check_deploy_finds_nothing_in_production_mode(tmp_path: Path) -> None:
    proc = run(production_env(tmp_path), "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in proc.stdout
    assert DB_PASSWORD not in output
    assert STRONG_KEY not in output


def test_check_deploy_would_see_an_unsafe_setting(tmp_path: Path) -> None:
    """The check above is not blind: insecure cookies (allowed, on purpose, by SECURE_COOKIES=0) are reported."""
    proc = run(
        production_env(tmp_path, SECURE_COOKIES="0"), "manage.py", "check", "--deploy", "--fail-level", "WARNING"
    )
    assert proc.returncode != 0
    assert "security.W012" in proc.stderr + proc.stdout  # SESSION_COOKIE_SECURE


# --- unsafe values refused ------------------------------------------------------------------------------

START = "import django; django.setup(); print('started')"


@pytest.mark.parametrize("hosts", ["*", "prefs.example.org,*", " .* "])
def test_production_refuses_any_host(tmp_path: Path, hosts: str) -> None:
    proc = run(production_env(tmp_path, ALLOWED_HOSTS=hosts, DJANGO_SETTINGS_MODULE="webapp.settings"), "-c", START)
    assert proc.returncode != 0
    assert "started" not in proc.stdout
    assert "Refusing to start in production mode" in proc.stderr
    assert "ALLOWED_HOSTS allows any host" in proc.stderr


def test_production_refuses_a_long_key_of_few_characters(tmp_path: Path) -> None:
    env = production_env(tmp_path, SECRET_KEY="ab" * 30, DJANGO_SETTINGS_MODULE="webapp.settings")
    proc = run(env, "-c", START)
    assert proc.returncode != 0
    assert "SECRET_KEY is too weak (fewer than 5 different characters)" in proc.stderr
    assert "ab" * 30 not in proc.stderr  # the error names the variable, never its value


# --- real responses in production mode -------------------------------------------------------------------

RESPONSES = """
import django, json
django.setup()
from django.conf import settings
from django.test import Client
client = Client(HTTP_HOST="prefs.example.org")
out = {}
https = {"X-Forwarded-Proto": "https"}  # what the TLS proxy sets
for name, path, headers in [("login", "/login/", https), ("login_http", "/login/", {}),
                            ("health_http", "/healthz", {}), ("api", "/api/projects", https),
                            ("missing", "/no/such/page", https)]:
    r = client.get(path, headers=headers)
    cookies = {k: {a: str(m[a]) for a in ("secure", "httponly", "samesite")} for k, m in r.cookies.items()}
    out[name] = {"status": r.status_code, "headers": dict(r.headers), "cookies": cookies}
out["settings"] = {k: getattr(settings, k) for k in ("SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY",
    "SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "TRUSTED_PROXY_COUNT", "DEBUG")}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def production_responses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = production_env(tmp_path_factory.mktemp("prod"), DJANGO_SETTINGS_MODULE="webapp.settings")
    proc = run(env, "-c", RESPONSES)
    assert proc.returncode == 0, proc.stderr
    assert DB_PASSWORD not in proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_production_pages_carry_the_security_headers(production_responses: dict[str, Any]) -> None:
    for name in ("login", "api", "missing"):
        headers = production_responses[name]["headers"]
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload", name
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        csp = headers["Content-Security-Policy"]
        for directive in ("default-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'self'"):
            assert directive in csp
        assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
        assert "camera=()" in headers["Permissions-Policy"]
    assert production_responses["login"]["status"] == 200
    assert production_responses["api"]["status"] == 401
    assert production_responses["missing"]["status"] == 404
    assert "no-store" in production_responses["login"]["headers"]["Cache-Control"]


def test_production_redirects_plain_http_but_for_the_health_check(production_responses: dict[str, Any]) -> None:
    plain = production_responses["login_http"]
    assert plain["status"] == 301
    assert plain["headers"]["Location"] == "https://prefs.example.org/login/"
    assert production_responses["health_http"]["status"] == 200


def test_production_cookies_are_secure(production_responses: dict[str, Any]) -> None:
    csrf = production_responses["login"]["cookies"]["csrftoken"]
    assert csrf["secure"] == "True"
    assert csrf["samesite"] == "Lax"
    assert production_responses["settings"] == {
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "TRUSTED_PROXY_COUNT": 1,
        "DEBUG": False,
    }


@pytest.mark.django_db
def test_the_session_cookie_of_a_real_login_is_secure_httponly_and_samesite(settings: Any) -> None:
    """Production's cookie settings (checked above) on this process's real login."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    UserFactory(username="cookie-user")
    client = Client(REMOTE_ADDR=f"203.0.113.{secrets.randbelow(250) + 1}-cookie-{secrets.token_hex(3)}")
    response = client.post("/login/", {"username": "cookie-user", "password": "correct-horse-battery"}, secure=True)
    assert response.status_code == 302
    cookie = response.cookies["sessionid"]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


# --- every response, in this process ---------------------------------------------------------------------


@pytest.mark.django_db
def test_every_kind_of_response_carries_the_headers(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    project: Any = ProjectFactory(slug="hdr")
    manager: Any = UserFactory(username="hdr-boss")
    MembershipFactory(project=project, user=manager, role="manager")
    client = Client()
    client.force_login(manager)
    outsider = Client()
    outsider.force_login(UserFactory(username="hdr-outsider"))
    token = create_token(manager)
    responses = {
        "page": client.get("/p/hdr/"),
        "403": outsider.get("/p/hdr/"),
        "404": client.get("/p/no-such/"),
        "405": client.get("/p/hdr/exports/new"),
        "api": client.get("/api/projects/hdr", headers={"Authorization": f"Bearer {token}"}),
        "api-401": client.get("/api/projects/hdr"),
        "login": Client().get("/login/"),
        "redirect": Client().get("/"),
        "static": client.get("/static/webapp/htmx.min.js"),
    }
    for name, response in responses.items():
        assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY, name
        assert response["X-Content-Type-Options"] == "nosniff", name
        assert response["Referrer-Policy"] == "same-origin", name
        if name != "static":
            assert response["X-Frame-Options"] == "DENY", name
    assert responses["page"].status_code == 200
    assert responses["403"].status_code == 403


def test_every_inline_event_handler_of_the_templates_is_allowed_by_the_csp_and_only_those() -> None:
    """script-src blocks inline handlers but those listed (by hash) in settings.CSP_INLINE_HANDLERS.

    A failure here: move the new handler to a static .js file (best), or add its code to CSP_INLINE_HANDLERS.
    """
    found = template_handlers()
    for code, where in found.items():
        assert "{" not in code, f"{where}: a handler built by the template cannot be allowed by a fixed hash"
        assert code in settings.CSP_INLINE_HANDLERS, f"{where}: the CSP blocks {code!r}; see this test's docstring"
        digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in settings.CONTENT_SECURITY_POLICY
    stale = set(settings.CSP_INLINE_HANDLERS) - set(found)
    assert not stale, f"no template holds {stale} any more: remove it from CSP_INLINE_HANDLERS"


def test_upload_and_request_size_limits_are_set() -> None:
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 2_621_440
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE == 2_621_440
    assert settings.DATA_UPLOAD_MAX_NUMBER_FIELDS == 1000
    assert settings.DATA_UPLOAD_MAX_NUMBER_FILES == 10
    assert settings.CONSOLE_UPLOAD_MAX_BYTES == 200 * 1024 * 1024
    assert settings.API_MAX_BULK_BYTES == 512 * 1024 * 1024

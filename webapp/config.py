"""Reading settings from the environment: pure functions, tested without Django."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MODES = ("development", "production", "test")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting is missing or unsafe; the message names the variable."""


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = env.get(name)
    if raw is None:
        return list(default)
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse_database_url(url: str, *, base_dir: Path) -> dict[str, Any]:
    """Turn `postgres://user:pw@host:port/name?opt=v` or `sqlite:///path` into a DATABASES entry."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative/path and sqlite:////absolute/path, as dj-database-url reads them.
        raw_path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not raw_path:
            raise ConfigError("DATABASE_URL: a sqlite URL needs a file path (sqlite:///var/db.sqlite3)")
        path = Path(raw_path)
        if not path.is_absolute():
            path = base_dir / path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(path),
            # WAL lets the web server read while a Celery worker writes.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ConfigError("DATABASE_URL: a postgres URL needs a database name (postgres://host/name)")
        options: dict[str, Any] = dict(parse_qsl(parts.query))
        _typed_postgres_options(options)
        return {
            # Django's backend with a health check that costs no query (webapp/postgres/base.py).
            "ENGINE": "webapp.postgres",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    raise ConfigError(f"DATABASE_URL: unsupported scheme {scheme!r} (use postgres:// or sqlite:///)")


def _typed_postgres_options(options: dict[str, Any]) -> None:
    """The options Django hands to psycopg as Python values, not strings: `?server_side_binding=false`,
    `?prepare_threshold=none` (prepared statements off, e.g. behind a transaction-mode pooler)."""
    if "server_side_binding" in options:
        word = str(options["server_side_binding"]).strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigError(f"DATABASE_URL: server_side_binding={word!r} is not a boolean")
        options["server_side_binding"] = word in TRUE_WORDS
    if "prepare_threshold" in options:
        raw = str(options["prepare_threshold"]).strip().lower()
        if raw in {"", "none", "off"}:
            options["prepare_threshold"] = None
        else:
            try:
                options["prepare_threshold"] = int(raw)
            except ValueError:
                raise ConfigError(f"DATABASE_URL: prepare_threshold={raw!r} is not an integer or 'none'") from None


def check_production(*, debug: bool, secret_key: str | None, allowed_hosts: list[str]) -> None:
    """Refuse unsafe production settings, naming every offending variable."""
    problems = []
    if debug:
        problems.append("DEBUG is on (set DEBUG=0)")
    if not secret_key:
        problems.append("SECRET_KEY is missing (set SECRET_KEY to a long random string)")
    elif len(secret_key) < 32 or secret_key.startswith("django-insecure"):
        problems.append("SECRET_KEY is too weak (use at least 32 random characters)")
    if not allowed_hosts:
        problems.append("ALLOWED_HOSTS is empty (set ALLOWED_HOSTS=example.org,...)")
    if problems:
        raise ConfigError("Refusing to start in production mode: " + "; ".join(problems) + ".")

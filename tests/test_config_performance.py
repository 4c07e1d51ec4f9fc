"""The settings that make pages cheaper: prepared statements, and the session cache where Redis is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from webapp.config import ConfigError, parse_database_url

ROOT = Path(__file__).resolve().parent.parent
SAFE_KEY = "k" * 20 + "-Zq8vR3mX1pL7wN4tB6yC"
SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s;"
    " print(json.dumps({'options': s.DATABASES['default']['OPTIONS'], 'sessions': s.SESSION_ENGINE,"
    " 'cache': s.CACHES['default']['BACKEND'], 'location': s.CACHES['default'].get('LOCATION')}))"
)


def _settings(env_vars: dict[str, str]) -> dict[str, object]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    env.update(env_vars)
    proc = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _production(**overrides: str) -> dict[str, str]:
    return {
        "HYBRIDPREF_MODE": "production",
        "DATABASE_URL": "postgres://prefs@db.invalid:5432/prefs",
        "CELERY_BROKER_URL": "redis://redis.invalid:6379/0",
        "SECRET_KEY": SAFE_KEY,
        "ALLOWED_HOSTS": "prefs.example.org",
        "DEBUG": "0",
        **overrides,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("server_side_binding=false", {"server_side_binding": False}),
        ("server_side_binding=1&prepare_threshold=10", {"server_side_binding": True, "prepare_threshold": 10}),
        ("prepare_threshold=none", {"prepare_threshold": None}),
        ("sslmode=require&prepare_threshold=0", {"sslmode": "require", "prepare_threshold": 0}),
    ],
)
def test_psycopg_options_in_the_url_are_read_as_values(query, expected):
    assert parse_database_url(f"postgres://h/db?{query}", base_dir=ROOT)["OPTIONS"] == expected


@pytest.mark.parametrize("query", ["server_side_binding=maybe", "prepare_threshold=often"])
def test_a_bad_psycopg_option_is_refused_and_named(query):
    with pytest.raises(ConfigError, match=query.split("=")[0]):
        parse_database_url(f"postgres://h/db?{query}", base_dir=ROOT)


def test_production_binds_on_the_server_and_prepares_statements():
    assert _settings(_production())["options"] == {"server_side_binding": True, "prepare_threshold": 5}


def test_the_database_url_can_turn_prepared_statements_off():
    url = "postgres://prefs@db.invalid:5432/prefs?prepare_threshold=none&server_side_binding=false"
    assert _settings(_production(DATABASE_URL=url))["options"] == {
        "server_side_binding": False,
        "prepare_threshold": None,
    }


def test_server_options_in_the_url_are_kept_and_may_choose_the_plan_cache_mode():
    url = "postgres://prefs@db.invalid:5432/prefs?options=-c%20statement_timeout%3D5000"
    assert _settings(_production(DATABASE_URL=url))["options"]["options"] == "-c statement_timeout=5000"
    url = "postgres://prefs@db.invalid:5432/prefs?options=-c%20plan_cache_mode%3Dforce_custom_plan"
    assert _settings(_production(DATABASE_URL=url))["options"]["options"] == "-c plan_cache_mode=force_custom_plan"


def test_production_with_a_redis_broker_caches_sessions_in_it():
    shown = _settings(_production())
    assert shown["sessions"] == "django.contrib.sessions.backends.cached_db"
    assert shown["cache"] == "webapp.cache.RedisCache"
    assert shown["location"] == "redis://redis.invalid:6379/0"


def test_redis_url_names_the_cache_and_cache_redis_url_none_turns_it_off():
    assert _settings(_production(REDIS_URL="redis://cache.invalid/3"))["location"] == "redis://cache.invalid/3"
    shown = _settings(_production(CACHE_REDIS_URL="none"))
    assert shown["sessions"] == "django.contrib.sessions.backends.db"
    assert shown["cache"] == "django.core.cache.backends.dummy.DummyCache"


def test_the_embedded_demo_keeps_sessions_in_the_database_only(tmp_path):
    # No Redis: a cache in each process's memory would let a logged-out session live on in another worker.
    shown = _settings({"HYBRIDPREF_MODE": "development", "HYBRIDPREF_DATA_DIR": str(tmp_path)})
    assert shown["sessions"] == "django.contrib.sessions.backends.db"
    assert shown["cache"] == "django.core.cache.backends.dummy.DummyCache"
    assert shown["options"] == {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL;",
    }

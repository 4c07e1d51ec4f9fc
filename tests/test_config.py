"""Settings from the environment: the pure helpers in webapp.config, and Django really starting (or refusing to)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from webapp.config import ConfigError, check_production, env_bool, env_list, parse_database_url

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SAFE_KEY = "k" * 20 + "-Zq8vR3mX1pL7wN4tB6yC"  # 41 characters, not django-insecure
START_DJANGO = "import django; django.setup(); from django.conf import settings; print('started', settings.MODE)"


# --- parse_database_url -----------------------------------------------------------------------


def test_a_postgres_url_gives_every_connection_field():
    db = parse_database_url("postgres://alice:s3cret@db.example.org:6543/prefs?sslmode=require", base_dir=ROOT)
    assert db["ENGINE"] == "webapp.postgres"
    assert db["NAME"] == "prefs"
    assert db["USER"] == "alice"
    assert db["PASSWORD"] == "s3cret"
    assert db["HOST"] == "db.example.org"
    assert db["PORT"] == "6543"
    assert db["OPTIONS"] == {"sslmode": "require"}


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "pgsql", "POSTGRES"])
def test_every_postgres_scheme_spelling_is_accepted(scheme):
    assert parse_database_url(f"{scheme}://h/n", base_dir=ROOT)["ENGINE"] == "webapp.postgres"


def test_percent_encoded_credentials_and_names_are_decoded():
    db = parse_database_url("postgres://us%40er:p%3Aw%2Fd@localhost/my%20db", base_dir=ROOT)
    assert (db["USER"], db["PASSWORD"], db["NAME"]) == ("us@er", "p:w/d", "my db")


def test_a_postgres_url_without_user_or_port_leaves_them_empty():
    db = parse_database_url("postgres://127.0.0.1/hybridpref", base_dir=ROOT)
    assert (db["USER"], db["PASSWORD"], db["PORT"], db["OPTIONS"]) == ("", "", "", {})


def test_a_postgres_url_without_a_database_name_is_refused():
    with pytest.raises(ConfigError, match="database name"):
        parse_database_url("postgres://user@localhost:5432/", base_dir=ROOT)


def test_a_relative_sqlite_path_is_taken_from_the_base_dir(tmp_path):
    db = parse_database_url("sqlite:///var/db.sqlite3", base_dir=tmp_path)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "var" / "db.sqlite3")


def test_an_absolute_sqlite_path_is_kept(tmp_path):
    db = parse_database_url(f"sqlite:///{tmp_path}/x.sqlite3", base_dir=ROOT)
    assert db["NAME"] == str(tmp_path / "x.sqlite3")


def test_sqlite_runs_in_wal_mode_so_a_worker_can_write_while_the_web_reads():
    db = parse_database_url("sqlite:///db.sqlite3", base_dir=ROOT)
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]


def test_a_sqlite_url_without_a_path_is_refused():
    with pytest.raises(ConfigError, match="file path"):
        parse_database_url("sqlite://", base_dir=ROOT)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "redis://localhost/0", "db.sqlite3", ""])
def test_an_unsupported_scheme_is_refused_and_named(url):
    with pytest.raises(ConfigError, match="unsupported scheme"):
        parse_database_url(url, base_dir=ROOT)


# --- env_bool / env_list ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", " yes ", "on"])
def test_true_words_read_as_true(raw):
    assert env_bool({"DEBUG": raw}, "DEBUG", default=False) is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", ""])
def test_false_words_read_as_false(raw):
    assert env_bool({"DEBUG": raw}, "DEBUG", default=True) is False


def test_an_unset_boolean_takes_the_default():
    assert env_bool({}, "DEBUG", default=True) is True
    assert env_bool({}, "DEBUG", default=False) is False


@pytest.mark.parametrize("raw", ["2", "maybe", "enabled", "y"])
def test_a_word_that_is_not_a_boolean_is_an_error_naming_the_variable(raw):
    with pytest.raises(ConfigError, match=r"DEBUG=.* is not a boolean"):
        env_bool({"DEBUG": raw}, "DEBUG", default=False)


def test_lists_are_comma_separated_and_blank_entries_dropped():
    assert env_list({"ALLOWED_HOSTS": " a.org, ,b.org ,"}, "ALLOWED_HOSTS", ["x"]) == ["a.org", "b.org"]
    assert env_list({}, "ALLOWED_HOSTS", ["x"]) == ["x"]
    assert env_list({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS", ["x"]) == []


# --- check_production -------------------------------------------------------------------------


def test_safe_production_settings_pass():
    check_production(debug=False, secret_key=SAFE_KEY, allowed_hosts=["prefs.example.org"])


def test_production_refuses_debug():
    with pytest.raises(ConfigError, match="DEBUG"):
        check_production(debug=True, secret_key=SAFE_KEY, allowed_hosts=["h"])


@pytest.mark.parametrize("key", ["", None])
def test_production_refuses_a_missing_secret_key(key):
    with pytest.raises(ConfigError, match="SECRET_KEY is missing"):
        check_production(debug=False, secret_key=key, allowed_hosts=["h"])


@pytest.mark.parametrize("key", ["short", "django-insecure-" + "x" * 40])
def test_production_refuses_a_weak_secret_key(key):
    with pytest.raises(ConfigError, match="SECRET_KEY is too weak"):
        check_production(debug=False, secret_key=key, allowed_hosts=["h"])


def test_production_refuses_empty_allowed_hosts():
    with pytest.raises(ConfigError, match="ALLOWED_HOSTS"):
        check_production(debug=False, secret_key=SAFE_KEY, allowed_hosts=[])


def test_production_names_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        check_production(debug=True, secret_key="", allowed_hosts=[])
    message = str(info.value)
    assert "DEBUG" in message
    assert "SECRET_KEY" in message
    assert "ALLOWED_HOSTS" in message


# --- Django starting in a fresh process -------------------------------------------------------


def _run_django(env_vars: dict[str, str], code: str = START_DJANGO) -> subprocess.CompletedProcess[str]:
    """Start Django in a clean environment: only what is given, plus what a process needs to run."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    env.update(env_vars)
    return subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _production_env(**overrides: str | None) -> dict[str, str]:
    env: dict[str, str | None] = {
        "HYBRIDPREF_MODE": "production",
        "DATABASE_URL": "postgres://prefs@db.invalid:5432/prefs",
        "CELERY_BROKER_URL": "redis://redis.invalid:6379/0",
        "SECRET_KEY": SAFE_KEY,
        "ALLOWED_HOSTS": "prefs.example.org",
        "DEBUG": "0",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def _assert_refused(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "started" not in proc.stdout
    assert "ImproperlyConfigured" in proc.stderr
    assert "Refusing to start in production mode" in proc.stderr
    for name in names:
        assert name in proc.stderr


def test_production_with_safe_settings_starts():
    proc = _run_django(_production_env())
    assert proc.returncode == 0, proc.stderr
    assert "started production" in proc.stdout


def test_production_with_debug_on_refuses_to_start_and_names_debug():
    _assert_refused(_run_django(_production_env(DEBUG="1")), "DEBUG is on")


def test_production_without_a_secret_key_refuses_to_start_and_names_it():
    _assert_refused(_run_django(_production_env(SECRET_KEY=None)), "SECRET_KEY is missing")


def test_production_with_a_weak_secret_key_refuses_to_start():
    _assert_refused(_run_django(_production_env(SECRET_KEY="django-insecure-abc")), "SECRET_KEY is too weak")


@pytest.mark.parametrize("hosts", [None, "", " , "])
def test_production_with_no_allowed_hosts_refuses_to_start_and_names_them(hosts):
    _assert_refused(_run_django(_production_env(ALLOWED_HOSTS=hosts)), "ALLOWED_HOSTS is empty")


def test_production_without_a_database_url_refuses_to_start():
    _assert_refused(_run_django(_production_env(DATABASE_URL=None)), "DATABASE_URL")


def test_production_without_a_broker_url_refuses_to_start():
    _assert_refused(_run_django(_production_env(CELERY_BROKER_URL=None)), "CELERY_BROKER_URL")


def test_production_manage_py_check_passes_with_safe_settings():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **_production_env()}
    proc = subprocess.run(
        [PYTHON, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "no issues" in proc.stdout


def test_an_unknown_mode_is_refused():
    proc = _run_django({"HYBRIDPREF_MODE": "staging"})
    assert proc.returncode != 0
    assert "HYBRIDPREF_MODE='staging'" in proc.stderr


def test_a_bad_debug_word_is_refused_as_a_configuration_error(tmp_path):
    proc = _run_django({"HYBRIDPREF_MODE": "development", "HYBRIDPREF_DATA_DIR": str(tmp_path), "DEBUG": "maybe"})
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr
    assert "DEBUG='maybe' is not a boolean" in proc.stderr


def test_development_mode_keeps_its_database_and_secret_key_in_the_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    show = (
        "import django; django.setup(); from django.conf import settings; "
        "from django.db import connection; connection.ensure_connection(); "
        "print(settings.DEBUG, settings.DATABASES['default']['NAME'], settings.SECRET_KEY, settings.CELERY_BROKER_URL)"
    )
    proc = _run_django({"HYBRIDPREF_MODE": "development", "HYBRIDPREF_DATA_DIR": str(data_dir)}, show)
    assert proc.returncode == 0, proc.stderr
    debug, db_name, secret, broker = proc.stdout.split()

    assert debug == "True"
    assert broker == "filesystem://"
    assert db_name == str(data_dir / "hybridpref.sqlite3")
    assert (data_dir / "hybridpref.sqlite3").is_file()
    assert (data_dir / "celery-queue" / "out").is_dir()

    key_file = data_dir / "secret_key"
    assert key_file.read_text().strip() == secret
    assert len(secret) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # A restart reads the same key back, so sessions survive.
    again = _run_django({"HYBRIDPREF_MODE": "development", "HYBRIDPREF_DATA_DIR": str(data_dir)}, show)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split()[2] == secret


def test_development_mode_migrates_into_the_embedded_sqlite_database(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "HYBRIDPREF_MODE": "development",
        "HYBRIDPREF_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hybridpref.sqlite3").stat().st_size > 0


def test_processes_starting_together_on_a_new_data_dir_share_one_secret_key(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "HYBRIDPREF_MODE": "development",
        "HYBRIDPREF_DATA_DIR": str(tmp_path),
    }
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    results = [(p.communicate(timeout=120), p.returncode) for p in procs]
    assert all(rc == 0 for _, rc in results), [err for (_, err), _ in results]
    keys = {out.strip() for (out, _), _ in results}
    assert keys == {(tmp_path / "secret_key").read_text().strip()}
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".secret_key")] == []

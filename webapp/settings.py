"""Django settings, read from the environment.

HYBRIDPREF_MODE picks the defaults:
- development (default): embedded SQLite database and file-system Celery broker under
  HYBRIDPREF_DATA_DIR, DEBUG on, a secret key generated once into the data directory.
- production: DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY and ALLOWED_HOSTS must be set; refuses
  DEBUG, a missing or weak SECRET_KEY and empty ALLOWED_HOSTS.
- test: what `make test` uses (PostgreSQL and Redis on 127.0.0.1 unless the URLs say otherwise).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

from webapp.config import MODES, ConfigError, check_production, env_bool, env_int, env_list, parse_database_url

T = TypeVar("T")
BASE_DIR = Path(__file__).resolve().parent.parent
env = os.environ


def _setting(read: Callable[..., T], name: str, default: T) -> T:
    """Read one variable; a bad value stops start-up with a message that names it."""
    try:
        return read(env, name, default)
    except ConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


MODE = env.get("HYBRIDPREF_MODE", "development")
if MODE not in MODES:
    raise ImproperlyConfigured(f"HYBRIDPREF_MODE={MODE!r}: use one of {', '.join(MODES)}")

DATA_DIR = Path(env.get("HYBRIDPREF_DATA_DIR", BASE_DIR / "var")).resolve()
PRODUCTION = MODE == "production"

try:
    DEBUG = env_bool(env, "DEBUG", default=MODE == "development")
    ALLOWED_HOSTS = env_list(env, "ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"])
    SECRET_KEY = env.get("SECRET_KEY", "")
    if PRODUCTION:
        check_production(debug=DEBUG, secret_key=SECRET_KEY, allowed_hosts=ALLOWED_HOSTS)
    elif not SECRET_KEY:
        # Development: a key made once per data directory, so sessions survive restarts.
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        key_file = DATA_DIR / "secret_key"
        if not key_file.exists():
            # Written whole and private (0600) to a temporary name, then linked into place: processes
            # starting together (web, worker) never read a half-written key, and all keep the first one.
            tmp_key = DATA_DIR / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50))
            try:
                os.link(tmp_key, key_file)
            except FileExistsError:
                pass
            finally:
                tmp_key.unlink()
        SECRET_KEY = key_file.read_text().strip()

    default_db = (
        "postgres://postgres@127.0.0.1:5432/hybridpref"
        if MODE == "test"
        else f"sqlite:///{DATA_DIR / 'hybridpref.sqlite3'}"
    )
    if PRODUCTION and "DATABASE_URL" not in env:
        raise ConfigError("Refusing to start in production mode: DATABASE_URL is missing.")
    DATABASES = {"default": parse_database_url(env.get("DATABASE_URL", default_db), base_dir=BASE_DIR)}
except ConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from exc

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    # Parameters bound on the server, and statements that a connection runs again and again (every page's
    # user, project and queue queries) prepared after 5 runs: PostgreSQL then no longer parses them, and
    # psycopg does not quote values in Python. The connections are persistent (CONN_MAX_AGE), so a
    # prepared statement serves many requests. `?prepare_threshold=none` in DATABASE_URL turns preparing
    # off (for a transaction-mode connection pooler), and `?server_side_binding=false` the binding.
    _db_options = DATABASES["default"]["OPTIONS"]
    _db_options.setdefault("server_side_binding", True)
    _db_options.setdefault("prepare_threshold", 5)
    # But every run is planned for its own values (force_custom_plan): PostgreSQL would otherwise settle on
    # one generic plan per prepared statement after five runs, made for the tables as they were then. On a
    # new project's near-empty assignment table that plan reads the table whole, for every item it
    # considers, and kept doing so as the table grew (the queue's claim went from 0.3 to 7 ms within
    # 2,500 submits). Prepared, a statement is still parsed only once.
    if "plan_cache_mode" not in str(_db_options.get("options", "")):
        _db_options["options"] = f"{_db_options.get('options', '')} -c plan_cache_mode=force_custom_plan".strip()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "webapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every view needs a login unless it is marked @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
MIGRATION_MODULES = {"webapp": "migrations.webapp"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            # {% partialdef %} everywhere without {% load %}, as Django 6 has it built in.
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTHENTICATION_BACKENDS = [
    "webapp.auth.ModelBackend",
    # Sessions from before webapp.auth name this one; it never checks a password webapp.auth refused.
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every start when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (development, tests) WhiteNoise serves straight from the app folders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = _setting(env_bool, "SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    CSRF_TRUSTED_ORIGINS = env_list(env, "CSRF_TRUSTED_ORIGINS", [])

# Celery. Embedded default: kombu's file-system transport under the data directory, so a new
# user needs no broker. Production and tests: Redis.
if PRODUCTION and "CELERY_BROKER_URL" not in env:
    raise ImproperlyConfigured("Refusing to start in production mode: CELERY_BROKER_URL is missing.")
CELERY_BROKER_URL = env.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0" if MODE == "test" else "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = DATA_DIR / "celery-queue"
    for _sub in ("out", "processed"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "out"),
        "data_folder_out": str(_queue_dir / "out"),
        "processed_folder": str(_queue_dir / "processed"),
        "store_processed": False,
    }
# Task state lives in our own tables (ImportJob, Judgment ...), so no result backend is needed.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = _setting(env_bool, "CELERY_TASK_ALWAYS_EAGER", False)
# Judges' per-endpoint rate limits live here so that every worker shares them; without Redis
# (the embedded demo's one worker) they are kept in the worker's memory.
RATE_LIMIT_REDIS_URL = env.get("REDIS_URL") or (CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else "")

# Sessions live in the database. With Redis (REDIS_URL, else a Redis Celery broker) they are also cached
# there ("cached_db"): each request then reads its session from Redis rather than PostgreSQL, while every
# worker sees the same copy, so logging out still ends the session everywhere at once. Without Redis (the
# embedded demo) there is no cache: one in each process's memory would let a session logged out in one
# worker live on in the others. CACHE_REDIS_URL=none turns the cache off.
CACHE_REDIS_URL = env.get("CACHE_REDIS_URL", RATE_LIMIT_REDIS_URL)
if CACHE_REDIS_URL and CACHE_REDIS_URL.lower() != "none":
    CACHES = {
        "default": {
            "BACKEND": "webapp.cache.RedisCache",
            "LOCATION": CACHE_REDIS_URL,
            "KEY_PREFIX": "hybridpref",
            # A Redis that does not answer costs a request half a second at most: the sessions then come
            # from the database (Django's cached_db falls back to it).
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    SESSION_ENGINE = "django.contrib.sessions.backends.db"

UPLOAD_DIR = DATA_DIR / "uploads"
# Dataset exports: one directory per snapshot, and the license their cards state unless asked otherwise.
EXPORT_DIR = Path(env.get("HYBRIDPREF_EXPORT_DIR", str(DATA_DIR / "exports")))
EXPORT_LICENSE = env.get("HYBRIDPREF_EXPORT_LICENSE", "other")
# Import limits: a text field longer than this is rejected with the row and field named.
IMPORT_MAX_FIELD_CHARS = _setting(env_int, "IMPORT_MAX_FIELD_CHARS", 200_000)
IMPORT_BATCH_SIZE = _setting(env_int, "IMPORT_BATCH_SIZE", 2000)
ANNOTATION_LEASE_MINUTES = _setting(env_int, "ANNOTATION_LEASE_MINUTES", 30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

"""Django settings, read from the environment.

HYBRIDPREF_MODE picks the defaults:
- development (default): embedded SQLite database and file-system Celery broker under
  HYBRIDPREF_DATA_DIR, DEBUG on, a secret key generated once into the data directory.
- production: DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY and ALLOWED_HOSTS must be set; refuses
  DEBUG, a missing or weak SECRET_KEY and empty ALLOWED_HOSTS.
- test: what `make test` uses (PostgreSQL and Redis on 127.0.0.1 unless the URLs say otherwise).
"""

from __future__ import annotations

import base64
import hashlib
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
        # What check_production lets through but no deployment should run with (docs/operations.md).
        _unsafe = []
        if any(host.strip() in {"*", ".*"} for host in ALLOWED_HOSTS):
            _unsafe.append("ALLOWED_HOSTS allows any host ('*'): name the site's host names")
        if len(set(SECRET_KEY)) < 5:
            _unsafe.append("SECRET_KEY is too weak (fewer than 5 different characters)")
        if _unsafe:
            raise ConfigError("Refusing to start in production mode: " + "; ".join(_unsafe) + ".")
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
    # Prepared statements get PostgreSQL's generic plans (plan_cache_mode auto, its default): planning the
    # queue's statements anew on every run cost about half of PostgreSQL's CPU per submit. The queue's
    # transactions turn sequential scans off so that a generic plan made on a near-empty table is still an
    # index plan (services.queue.index_plans). `?options=-c%20plan_cache_mode%3Dforce_custom_plan` in
    # DATABASE_URL plans every run anew.

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
    # Content-Security-Policy and Permissions-Policy on every response (settings below).
    "webapp.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A database that does not answer: a 503 saying nothing was saved and to retry, not a bare 500.
    "webapp.middleware_db.DatabaseUnavailableMiddleware",
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
    # Refuses every login attempt for a username or address over its failed-login limit, on every login
    # form (the admin site's too); never authenticates anyone itself. See webapp/ratelimit_login.py.
    "webapp.ratelimit_login.RateLimitBackend",
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

# --- security: cookies, headers, HTTPS, upload sizes, login rate limits (docs/operations.md) ---
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Sent by webapp.security.SecurityHeadersMiddleware. The pages load scripts only from /static/ (htmx,
# annotate.js), never inline, but for the templates' inline event handlers listed here, each allowed by its
# hash ('unsafe-hashes'): tests/test_security_settings.py fails on one that is not listed (better: move it
# to a static .js file). Styles may be inline (htmx adds its indicator style); nothing is framed, fetched or
# posted cross-origin. CONTENT_SECURITY_POLICY in the environment replaces it; "none" turns it off.
CSP_INLINE_HANDLERS = (
    "this.form.budget.value=this.value",  # webapp/templates/webapp/routing.html: the budget slider
)
_script_src = " ".join(
    ["'self'", *(["'unsafe-hashes'"] if CSP_INLINE_HANDLERS else [])]
    + [f"'sha256-{base64.b64encode(hashlib.sha256(h.encode()).digest()).decode()}'" for h in CSP_INLINE_HANDLERS]
)
CONTENT_SECURITY_POLICY = env.get(
    "CONTENT_SECURITY_POLICY",
    f"default-src 'self'; script-src {_script_src}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
if PRODUCTION:
    SESSION_COOKIE_SECURE = _setting(env_bool, "SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and overwrites what clients send).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    CSRF_TRUSTED_ORIGINS = env_list(env, "CSRF_TRUSTED_ORIGINS", [])
    SECURE_SSL_REDIRECT = _setting(env_bool, "SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # the load balancer's plain-HTTP health check
    # HSTS for a year, subdomains included, preload-ready: what `check --deploy` asks for. A site that
    # serves other subdomains over plain HTTP sets SECURE_HSTS_INCLUDE_SUBDOMAINS=0 (and SECURE_HSTS_PRELOAD=0).
    SECURE_HSTS_SECONDS = _setting(lambda e, n, d: env_int(e, n, d, minimum=0), "SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _setting(env_bool, "SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _setting(env_bool, "SECURE_HSTS_PRELOAD", True)

# Request sizes. A form post (no file) bigger than this is refused with 400 before a view sees it; an
# uploaded file over FILE_UPLOAD_MAX_MEMORY_SIZE is spooled to a temporary file instead of memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = _setting(env_int, "DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
FILE_UPLOAD_MAX_MEMORY_SIZE = _setting(env_int, "FILE_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
DATA_UPLOAD_MAX_NUMBER_FILES = 10
# The largest file the console's upload page takes (413 above; webapp.services.uploads), and the largest
# body of one bulk item request of the API (413 above; webapp.services.api_support).
CONSOLE_UPLOAD_MAX_BYTES = _setting(env_int, "CONSOLE_UPLOAD_MAX_BYTES", 200 * 1024 * 1024)
API_MAX_BULK_BYTES = _setting(env_int, "API_MAX_BULK_BYTES", 512 * 1024 * 1024)

# Failed logins (webapp.ratelimit_login): after this many for one username, or from one address, within
# the window, every further attempt is refused (429) until the window that began with the first failure
# ends. A successful login clears its username's count. Counted in the "ratelimit" cache (Redis where
# there is one). TRUSTED_PROXY_COUNT: reverse proxies in front whose X-Forwarded-For entries are believed
# (production: 1, the TLS proxy; 0 elsewhere, where REMOTE_ADDR is the client).
LOGIN_FAILURES_PER_USERNAME = _setting(env_int, "LOGIN_FAILURES_PER_USERNAME", 10)
LOGIN_FAILURES_PER_IP = _setting(env_int, "LOGIN_FAILURES_PER_IP", 50)
LOGIN_FAILURE_WINDOW_S = _setting(env_int, "LOGIN_FAILURE_WINDOW_S", 15 * 60)
LOGIN_RATELIMIT_CACHE = "ratelimit"
TRUSTED_PROXY_COUNT = _setting(lambda e, n, d: env_int(e, n, d, minimum=0), "TRUSTED_PROXY_COUNT", int(PRODUCTION))

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
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A killed worker's unacknowledged chunk goes back to the queue after this many seconds. It
        # must outlast the longest wait of a retried chunk (300 s, annotators/backoff.py), or a chunk
        # waiting out a Retry-After would be handed to a second worker as well.
        "visibility_timeout": _setting(lambda e, n, d: env_int(e, n, d, minimum=301), "CELERY_VISIBILITY_TIMEOUT", 900),
        # A Redis that accepts connections but never answers costs a send a few seconds, not forever
        # (kombu's default): the web request that starts a run answers, and the run stays queued.
        # Above the worker's 1 s BRPOP timeout.
        "socket_timeout": 3.0,
        "socket_connect_timeout": 3.0,
    }
# One retry of a failed send (Celery's default is three, each up to a socket timeout).
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
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
    # Failed-login counts (webapp.ratelimit_login): shared by every web worker.
    CACHES["ratelimit"] = dict(CACHES["default"])
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    SESSION_ENGINE = "django.contrib.sessions.backends.db"
    # Without Redis, failed logins are counted in each process's memory (the embedded demo's one server).
    CACHES["ratelimit"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "login-ratelimit"}

UPLOAD_DIR = DATA_DIR / "uploads"
# Dataset exports: one directory per snapshot, and the license their cards state unless asked otherwise.
EXPORT_DIR = Path(env.get("HYBRIDPREF_EXPORT_DIR", str(DATA_DIR / "exports")))
EXPORT_LICENSE = env.get("HYBRIDPREF_EXPORT_LICENSE", "other")
# Import limits: a text field longer than this is rejected with the row and field named.
IMPORT_MAX_FIELD_CHARS = _setting(env_int, "IMPORT_MAX_FIELD_CHARS", 200_000)
IMPORT_BATCH_SIZE = _setting(env_int, "IMPORT_BATCH_SIZE", 2000)
# Files at least this large are read by a child process while the import writes (webapp/importing/reader.py).
# Its start costs about 0.25 s: measured here, it paid off from about 100 MB (a 99 MB file took 1.7 s either way).
IMPORT_READER_PROCESS_MIN_BYTES = _setting(env_int, "IMPORT_READER_PROCESS_MIN_BYTES", 100_000_000)
ANNOTATION_LEASE_MINUTES = _setting(env_int, "ANNOTATION_LEASE_MINUTES", 30)
# Routing features: how cosine_sim and bertscore embed responses (routing/features.py): "static"
# (MiniLM distilled to one vector per token; about 40 s per 10,000 items on two CPU cores) or "contextual"
# (the MiniLM model itself; about 15 minutes per 10,000 items on two CPU cores, fast on a GPU).
ROUTING_EMBEDDINGS = env.get("HYBRIDPREF_ROUTING_EMBEDDINGS", "static")
if ROUTING_EMBEDDINGS not in ("static", "contextual"):
    raise ImproperlyConfigured(f"HYBRIDPREF_ROUTING_EMBEDDINGS={ROUTING_EMBEDDINGS!r}: use static or contextual")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

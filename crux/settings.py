"""Crux settings: every deployment knob comes from the environment (django-environ).

Each variable read here has a safe default and a line in README's configuration
table. SQL is the source of truth; Redis only mirrors it.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("SECRET_KEY", default="insecure-dev-key-set-SECRET_KEY-in-production")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "django_celery_results",
    "tasks",
    "persistence",
    "retention",
    "crux",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "crux.urls"
WSGI_APPLICATION = "crux.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "retention.breaker.banner",
            ],
        },
    },
]

# --- Database: SQLite (WAL, synchronous=FULL) by default, PostgreSQL via DATABASE_URL.
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'crux.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend, with writers queued on a kernel lock (crux/db/base.py).
    DATABASES["default"]["ENGINE"] = "crux.db"
    DATABASES["default"]["OPTIONS"] = {
        # Take the write lock at BEGIN: a read-then-write transaction never
        # fails half-way with "database is locked".
        "transaction_mode": "IMMEDIATE",
        "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
        # An acknowledged write is on disk: WAL with a full fsync at commit.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
    }
# The test database: a file for SQLite, so that worker processes started by tests can share it.
_default_test_name = str(VAR_DIR / "test_crux.sqlite3") if DATABASES["default"]["ENGINE"] == "crux.db" else None
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default=_default_test_name)}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Keep connections between requests: opening one (and running the SQLite pragmas) per request
# costs more than the request itself.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: a disposable mirror and the Celery broker. Never a store of record.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_TIMEOUT = env.float("REDIS_TIMEOUT", default=0.5)
REDIS_KEY_PREFIX = env("REDIS_KEY_PREFIX", default="crux")
# django-redis's default, set because it is read twice at the end of every request (unset: an exception each).
DJANGO_REDIS_CLOSE_CONNECTION = False
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX,
        "TIMEOUT": None,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": REDIS_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_TIMEOUT,
        },
    }
}
# Mirror entries of finished tasks expire after this many seconds (they are
# rebuilt from SQL on the next read); entries of live tasks never expire.
MIRROR_TERMINAL_TTL = env.int("MIRROR_TERMINAL_TTL", default=86400)

# --- Celery: durable by configuration (see DESIGN.md "Known traps").
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
BROKER_IS_REDIS = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
if BROKER_IS_REDIS:
    CELERY_BROKER_TRANSPORT = "crux.broker:Transport"  # kombu's, minus a client built per publish
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=43200),
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SERIALIZER = "json"
# Celery's defaults, set here because Celery reads them on every publish: an unset one is looked up under
# several names through Django's lazy settings, raising and catching AttributeError each time (~20 us).
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_TASK_REPR_MAXLEVELS = 3
CELERY_BROKER_POOL_ACQUIRE_TIMEOUT = None
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"

# --- Execution: handlers, leases and the sweeps that heal lost work.
TASK_HANDLERS = {
    "echo": "tasks.handlers.echo",
    "sleep": "tasks.handlers.sleep",
    "fail": "tasks.handlers.fail",
    "agent_demo": "tasks.handlers.agent_demo",
    **env.dict("TASK_HANDLERS_EXTRA", default={}),
}
# A running task holds a lease renewed by heartbeat; an expired lease means its
# worker is gone. Detection takes at most lease + sweep interval (25 s by default).
TASK_LEASE_SECONDS = env.float("TASK_LEASE_SECONDS", default=20.0)
RECOVERY_SWEEP_SECONDS = env.float("RECOVERY_SWEEP_SECONDS", default=5.0)
# A queued task not started after this long is re-published (doubling per retry):
# SQL is the outbox, so a lost broker message never loses the task.
REDISPATCH_AFTER_SECONDS = env.float("REDISPATCH_AFTER_SECONDS", default=300.0)
MIRROR_RECONCILE_SECONDS = env.float("MIRROR_RECONCILE_SECONDS", default=300.0)
CELERY_BEAT_SCHEDULE = {
    "recovery-sweep": {"task": "crux.recovery_sweep", "schedule": RECOVERY_SWEEP_SECONDS},
    "reconcile-mirror": {"task": "crux.reconcile_mirror", "schedule": MIRROR_RECONCILE_SECONDS},
}

# --- Auth, i18n, static files.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST API: nothing anonymous, owner-scoped, paginated with a cap, throttled.
API_PAGE_SIZE = env.int("API_PAGE_SIZE", default=50)
API_MAX_LIMIT = env.int("API_MAX_LIMIT", default=200)
# Lists count matches exactly up to this many past the requested page; beyond, ``count`` is a lower bound.
API_EXACT_COUNT_LIMIT = env.int("API_EXACT_COUNT_LIMIT", default=1000)
API_SUBMIT_MAX_BYTES = env.int("API_SUBMIT_MAX_BYTES", default=256 * 1024)
# Seconds an API token's user is served from Redis (dropped at once when the token or user changes; 0 = off).
API_TOKEN_CACHE_SECONDS = env.int("API_TOKEN_CACHE_SECONDS", default=60)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tasks.api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "tasks.api.pagination.StrictLimitOffsetPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["tasks.api.throttling.ReadThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "submit": env("API_THROTTLE_SUBMIT", default="60/minute"),
        "read": env("API_THROTTLE_READ", default="600/minute"),
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tasks.api.errors.crux_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Crux API",
    "DESCRIPTION": (
        "Durable background tasks: SQL is the source of truth, Redis a mirror. Authenticate with "
        "`Authorization: Token <key>` or a session; users see and act on their own tasks only, staff on all. "
        'Errors are JSON: `{"detail": message}` or `{field: [messages]}`.'
    ),
    "VERSION": "0.2.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"TaskStateEnum": "tasks.states.TaskState"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tasks.api.schema.closed_request_bodies",
        "tasks.api.schema.non_empty_enum_lists",
    ],
}


# --- Retention: nothing disappears without an archive, a ledger entry and a reason.
def _days(name: str, default: str) -> int | None:
    """A retention period in days from the environment; "never" (or empty) keeps tasks forever."""
    value = env(name, default=default).strip().lower()
    return None if value in ("", "never") else int(value)


RETENTION_DEFAULT_DAYS = {
    "completed": _days("RETENTION_COMPLETED_DAYS", "7"),
    "failed": _days("RETENTION_FAILED_DAYS", "30"),
    "cancelled": _days("RETENTION_CANCELLED_DAYS", "3"),
    "interrupted": _days("RETENTION_INTERRUPTED_DAYS", "never"),
    "soft_deleted": _days("RETENTION_SOFT_DELETED_GRACE_DAYS", "30"),
}
ENABLE_AUTO_PURGE = env.bool("ENABLE_AUTO_PURGE", default=False)
AUTO_PURGE_SECONDS = env.float("AUTO_PURGE_SECONDS", default=3600.0)
MAX_TASKS_PER_PURGE = env.int("MAX_TASKS_PER_PURGE", default=100)
DELETE_SPIKE_THRESHOLD_PER_MINUTE = env.int("DELETE_SPIKE_THRESHOLD_PER_MINUTE", default=5)
DELETE_SPIKE_WEBHOOK_URL = env("DELETE_SPIKE_WEBHOOK_URL", default="")
BACKUP_DIR = Path(env("BACKUP_DIR", default=str(VAR_DIR / "backups")))
BACKUP_RETENTION_DAYS = env.int("BACKUP_RETENTION_DAYS", default=30)
BACKUP_SECONDS = env.float("BACKUP_SECONDS", default=86400.0)
CELERY_BEAT_SCHEDULE["daily-backup"] = {"task": "crux.backup", "schedule": BACKUP_SECONDS}
if ENABLE_AUTO_PURGE:
    CELERY_BEAT_SCHEDULE["auto-purge"] = {"task": "crux.auto_purge", "schedule": AUTO_PURGE_SECONDS}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

# --- REST API, continued: throttle counters, health checks and metrics.
# Throttle counters live in Redis (this alias, so they can be pointed elsewhere)
# under REDIS_KEY_PREFIX; if Redis is down they fail open (tasks.api.throttling).
CACHES["throttle"] = dict(CACHES["default"])
INSTALLED_APPS += ["drf_spectacular_sidecar"]
# Seconds GET /api/health/ waits for a Celery worker to answer a ping.
HEALTH_WORKER_TIMEOUT = env.float("HEALTH_WORKER_TIMEOUT", default=1.0)
# A bearer token that lets a Prometheus scraper read /metrics without a staff account ("" = staff only).
METRICS_TOKEN = env("METRICS_TOKEN", default="")

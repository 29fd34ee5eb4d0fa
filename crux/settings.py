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
            ],
        },
    },
]

# --- Database: SQLite (WAL, synchronous=FULL) by default, PostgreSQL via DATABASE_URL.
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'crux.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # Take the write lock at BEGIN: a read-then-write transaction never
        # fails half-way with "database is locked".
        "transaction_mode": "IMMEDIATE",
        "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
        # An acknowledged write is on disk: WAL with a full fsync at commit.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
    }
# The test database: a file for SQLite, so that worker processes started by tests can share it.
_default_test_name = str(VAR_DIR / "test_crux.sqlite3") if DATABASES["default"]["ENGINE"].endswith("sqlite3") else None
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default=_default_test_name)}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: a disposable mirror and the Celery broker. Never a store of record.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_TIMEOUT = env.float("REDIS_TIMEOUT", default=0.5)
REDIS_KEY_PREFIX = env("REDIS_KEY_PREFIX", default="crux")
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

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tasks.api.errors.crux_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Crux API",
    "DESCRIPTION": "Durable background tasks: SQL is the source of truth, Redis a mirror.",
    "VERSION": "0.1.0",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

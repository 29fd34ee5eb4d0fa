"""Crux settings: every deployment knob comes from the environment (django-environ).

Each variable read here has a safe default and a line in README's configuration
table. SQL is the source of truth; Redis only mirrors it.
"""

import os
from pathlib import Path

import environ
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)


# Django's signing key: SECRET_KEY, else the file SECRET_KEY_FILE (`make keys` writes it). Never invented outside
# DEBUG: a public default key would let anyone forge sessions and password-reset links.
def _key_file_lines(path: Path) -> list[str]:
    """The non-empty lines of a key file kept outside the database and the repository."""
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _keys(label: str, variable: str, from_env: list[str], file_variable: str, debug_key: str) -> tuple[Path, list[str]]:
    """The key file named by ``file_variable`` and the keys: from the environment, else that file's lines.
    Outside DEBUG a key is never invented (ImproperlyConfigured)."""
    key_file = Path(env(file_variable, default=str(VAR_DIR / file_variable.removesuffix("_FILE").lower())))
    keys = from_env or _key_file_lines(key_file)
    if keys:
        return key_file, keys
    if not DEBUG:
        raise ImproperlyConfigured(
            f"no {label}: set {variable} or write {file_variable} ({key_file}); `make keys` creates one"
        )
    return key_file, [debug_key]


_secret_from_env = env("SECRET_KEY", default="").strip()
SECRET_KEY_FILE, (SECRET_KEY, *_) = _keys(
    "SECRET_KEY", "SECRET_KEY", [_secret_from_env] if _secret_from_env else [], "SECRET_KEY_FILE",
    "django-insecure-debug-only-key",
)  # fmt: skip
# Former keys, still accepted for signatures made before a rotation (comma-separated, newest first).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
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
    "django_celery_beat",
    "axes",
    "csp",
    "django_htmx",
    "tasks",
    "persistence",
    "retention",
    "crux",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "crux.security.DocumentCSPMiddleware",
    # Under /api/: the body-size limit, and JSON for every error answer (crux/errors.py).
    "crux.errors.ApiEdgeMiddleware",
    # Before anything reads the URL: a reason or a credential in a query string is refused (400 JSON).
    "tasks.api.middleware.RefuseCredentialsInURL",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # An htmx request answered by a redirect (an expired session) moves the whole page, not the refreshed panel.
    "crux.security.HtmxFullPageRedirect",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a login refused for lockout into crux.security's 429.
    "axes.middleware.AxesMiddleware",
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
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's PostgreSQL backend, with times read by psycopg's compiled loader (crux/postgres/base.py).
    DATABASES["default"]["ENGINE"] = "crux.postgres"
    # A server that accepts connections and never answers must not hold a request (or readiness's probe) for
    # ever: connecting gives up after this many seconds (libpq counts whole seconds, at least 2).
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=3)
    # The planner's cost of reading a page out of order, against 1 for the next one. PostgreSQL's 4 models a spinning
    # disk: with it a search in one owner's tasks read the table's creation-time index (its heap in order) instead of
    # the owner's, five times fewer rows. 0 keeps the server's setting.
    POSTGRES_RANDOM_PAGE_COST = env.float("POSTGRES_RANDOM_PAGE_COST", default=1.1)
    if POSTGRES_RANDOM_PAGE_COST > 0:
        _options = DATABASES["default"]["OPTIONS"]
        _options["options"] = f"{_options.get('options', '')} -c random_page_cost={POSTGRES_RANDOM_PAGE_COST}".lstrip()
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
# django-celery-results' backend (django-db), minus the rows a task execution writes in its own transactions.
CELERY_RESULT_BACKEND = "tasks.tasks:ResultBackend"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TRACK_STARTED = True
# Celery's Django fixup closes every database connection before and after each task unless this is set: a new
# connection per task, a third of an echo task's time on PostgreSQL (BENCHMARKS.md). Workers keep theirs instead,
# retired around each task by Django's own rules (CONN_MAX_AGE, the health check, an error): crux.celery.
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A broker that accepts connections but never answers must not hold a request: each step of a publish (connect,
# socket read/write, taking a pooled connection) gives up after CELERY_PUBLISH_TIMEOUT seconds and nothing retries
# in the request (kombu's retry loops are capped by "max_retries", crux/broker.py): the task stays queued in SQL and
# the re-dispatch sweep publishes it again.
CELERY_PUBLISH_TIMEOUT = env.float("CELERY_PUBLISH_TIMEOUT", default=1.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=43200),
    "socket_timeout": CELERY_PUBLISH_TIMEOUT,
    "socket_connect_timeout": CELERY_PUBLISH_TIMEOUT,
    "max_retries": 0,
}
# Priorities (tasks.dispatch.broker_priority maps Crux's 0-9, higher first, to each broker): on Redis one list per
# level, popped lowest number first (publishers and workers must agree on the steps); on RabbitMQ queues are
# declared with x-max-priority 9 (a queue declared before without it must be deleted first: RabbitMQ refuses a
# declaration whose arguments differ).
if BROKER_IS_REDIS:
    CELERY_BROKER_TRANSPORT_OPTIONS["priority_steps"] = list(range(10))
CELERY_TASK_QUEUE_MAX_PRIORITY = 9
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 0}
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=CELERY_PUBLISH_TIMEOUT)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SERIALIZER = "json"
# Celery's defaults, set here because Celery reads them on every publish: an unset one is looked up under
# several names through Django's lazy settings, raising and catching AttributeError each time (~20 us).
CELERY_TASK_ALWAYS_EAGER = False
# The queue task work is published to and the task worker consumes (a test run uses one of its own).
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_TASK_REPR_MAXLEVELS = 3
CELERY_BROKER_POOL_ACQUIRE_TIMEOUT = CELERY_PUBLISH_TIMEOUT
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# Housekeeping (recovery sweep, re-dispatch, mirror reconcile, backup, purge, audit checkpoints: every Celery task
# but task execution) has a queue of its own, consumed by its own worker (Procfile "housekeeping"), so a backlog of
# task work never delays the detection of lost work. The router is crux.celery.route_task.
CELERY_HOUSEKEEPING_QUEUE = env("CELERY_HOUSEKEEPING_QUEUE", default="crux.housekeeping")
CELERY_TASK_ROUTES = ("crux.celery.route_task",)
# Named task queues besides the default one and those handlers declare (@options(queue=...)): a task may name any
# of them, and a worker started without -Q consumes them all (crux.celery.declare_task_queues). Give a queue its
# own workers and concurrency with: celery -A crux worker -Q <queue> --concurrency N.
TASK_QUEUES = env.list("TASK_QUEUES", default=[])

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
# A handler's outputs are written with its next progress, metrics or outcome, or once the first waited this long
# (tasks.execution.TaskContext); 0 writes each at once, in a transaction of its own.
TASK_OUTPUT_FLUSH_SECONDS = env.float("TASK_OUTPUT_FLUSH_SECONDS", default=0.25)
# SQL is the outbox, so a lost broker message never loses the task; only what is known lost is re-published
# (persistence.dispatch): at once if the broker's epoch is gone (flushed or restarted Redis), and after this long
# (doubling per retry) if the broker never confirmed the publish.
REDISPATCH_AFTER_SECONDS = env.float("REDISPATCH_AFTER_SECONDS", default=30.0)
MIRROR_RECONCILE_SECONDS = env.float("MIRROR_RECONCILE_SECONDS", default=300.0)
# A failed attempt is retried (while attempts are left) after this many seconds, doubling per attempt up to the
# maximum, with jitter; a handler (attribute ``retry_backoff``) or a task (field ``retry_backoff``) may set its own.
TASK_RETRY_BACKOFF_SECONDS = env.float("TASK_RETRY_BACKOFF_SECONDS", default=10.0)
TASK_RETRY_BACKOFF_MAX_SECONDS = env.float("TASK_RETRY_BACKOFF_MAX_SECONDS", default=3600.0)
# Time limits of an attempt when neither the task nor its handler (@options) sets them (unset: unlimited). Past the
# soft limit the handler is told (SoftTimeLimitExceeded, ctx.soft_limit_reached); past the hard limit the attempt is
# terminated and recorded as a failed attempt, retried or failed by the retry rules.
TASK_SOFT_TIME_LIMIT_SECONDS = env.float("TASK_SOFT_TIME_LIMIT_SECONDS", default=None)
TASK_TIME_LIMIT_SECONDS = env.float("TASK_TIME_LIMIT_SECONDS", default=None)
# On SIGTERM (with REMAP_SIGTERM=SIGQUIT in the worker's environment, as the Procfile sets it) a worker stops taking
# tasks, lets the running ones finish for this many seconds, then stops them; those are recorded interrupted and
# requeued at once (tasks.tasks.requeue_on_worker_shutdown). The default fits honcho's 5 s before SIGKILL (make run);
# in production give it the time your attempts need and the process manager a stop timeout a few seconds above it.
WORKER_SHUTDOWN_GRACE_SECONDS = env.float("WORKER_SHUTDOWN_GRACE_SECONDS", default=3.0)
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = WORKER_SHUTDOWN_GRACE_SECONDS
# Each worker's main process reports itself (node, pool processes, queues) to the worker registry in SQL this often
# (crux.celery.WorkerRegistry); the Workers page counts one silent for WORKER_STALE_SECONDS as gone (a killed worker
# just stops reporting), and a worker starting forgets the instances silent for WORKER_FORGET_SECONDS.
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=2.0)
WORKER_STALE_SECONDS = env.float("WORKER_STALE_SECONDS", default=10.0)
WORKER_FORGET_SECONDS = env.float("WORKER_FORGET_SECONDS", default=7 * 86400.0)
# Tasks waiting in SQL for their time (run_at, a retry's backoff) are published this often once due.
DISPATCH_DUE_SECONDS = env.float("DISPATCH_DUE_SECONDS", default=0.5)
CELERY_BEAT_SCHEDULE = {
    "recovery-sweep": {"task": "crux.recovery_sweep", "schedule": RECOVERY_SWEEP_SECONDS},
    "dispatch-due": {"task": "crux.dispatch_due", "schedule": DISPATCH_DUE_SECONDS},
    "reconcile-mirror": {"task": "crux.reconcile_mirror", "schedule": MIRROR_RECONCILE_SECONDS},
}
# Beat keeps its schedule in SQL (django-celery-beat): these entries and the periodic schedules staff define in the
# admin (tasks.TaskSchedule). Only the beat holding the scheduler lease (a row in SQL, renewed every quarter of it,
# taken over once it expires) sends anything, so a second beat started by mistake stands by instead of running every
# job twice.
CELERY_BEAT_SCHEDULER = "crux.scheduler:GuardedScheduler"
SCHEDULER_LEASE_SECONDS = env.float("SCHEDULER_LEASE_SECONDS", default=10.0)

# --- Auth, i18n, static files.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Login lockout (django-axes): failed logins are counted in SQL per username *and* client address together, so
# an attacker cannot lock a user out from everywhere. Axes sits first among the backends, so every door that calls
# authenticate() with the request (the admin login, the API's /api/auth/login/) is watched; a locked-out client is
# answered 429 (crux/security.py) until AXES_COOLOFF_TIME passes or staff reset it (admin or `axes_reset_*` commands).
AUTHENTICATION_BACKENDS = ["crux.security.LoginLockoutBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_TIME", default=0.5) or None  # hours; 0: locked until staff reset
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "crux.security.lockout_response"
# Masked in axes' logs and its stored request data (the password always is); the client address is logged.
AXES_SENSITIVE_PARAMETERS = ["username", "csrfmiddlewaretoken"]
# Behind N reverse proxies, the client address is taken from X-Forwarded-For (0: REMOTE_ADDR, no proxy trusted).
AXES_IPWARE_PROXY_COUNT = env.int("AXES_IPWARE_PROXY_COUNT", default=0) or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR") if AXES_IPWARE_PROXY_COUNT else ("REMOTE_ADDR",)
)

# --- HTTPS: one switch, TLS=true, for a deployment served over TLS (README "Deployment"); each part can be
# overridden. Off by default so that `make run` keeps working on http://127.0.0.1.
TLS = env.bool("TLS", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=TLS)
# Probes (load balancers, orchestrators) may keep checking health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^api/health(/|$)"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=TLS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=TLS)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if TLS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=TLS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=TLS)
# Behind a proxy that terminates TLS: the header it sets on HTTPS requests, e.g. HTTP_X_FORWARDED_PROTO (opt-in:
# trust it only if the proxy strips the header from clients).
_proxy_ssl_header = env("SECURE_PROXY_SSL_HEADER", default="")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header, "https") if _proxy_ssl_header else None
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Content-Security-Policy (django-csp) on every HTML page: nothing is loaded from another origin, scripts only from
# our own static files (no inline script anywhere: Swagger UI's is served by its split view); inline styles stay
# allowed for the admin templates' computed widths and colours.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Dates and times with seconds in every page (crux/formats/en/formats.py: Y-m-d H:i:s), the admin's included.
FORMAT_MODULE_PATH = ["crux.formats"]
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST API: nothing anonymous, owner-scoped, paginated with a cap, throttled.
API_PAGE_SIZE = env.int("API_PAGE_SIZE", default=50)
API_MAX_LIMIT = env.int("API_MAX_LIMIT", default=200)
# Lists count matches exactly up to this many past the requested page; beyond, ``count`` is a lower bound.
API_EXACT_COUNT_LIMIT = env.int("API_EXACT_COUNT_LIMIT", default=1000)
# Task lists whose page is full count matches only among this many newest tasks; beyond, ``count`` is a lower bound.
API_COUNT_WINDOW = env.int("API_COUNT_WINDOW", default=10_000)
# The largest request body under /api/ (413 beyond), and the deepest nesting of a JSON body (400 beyond).
API_SUBMIT_MAX_BYTES = env.int("API_SUBMIT_MAX_BYTES", default=256 * 1024)
# POST /api/tasks/batch: at most this many tasks in one request, and a body of at most this many bytes.
TASK_BATCH_MAX = env.int("TASK_BATCH_MAX", default=1000)
API_BATCH_MAX_BYTES = env.int("API_BATCH_MAX_BYTES", default=8 * 1024 * 1024)
API_JSON_MAX_DEPTH = env.int("API_JSON_MAX_DEPTH", default=32)
# Seconds a 503 (the database refused: down, full, locked) asks the client to wait before retrying.
API_RETRY_AFTER_SECONDS = env.int("API_RETRY_AFTER_SECONDS", default=5)
# Seconds an API token's user is served from Redis (dropped at once when the token or user changes; 0 = off).
API_TOKEN_CACHE_SECONDS = env.int("API_TOKEN_CACHE_SECONDS", default=60)
# Live event streams (crux.streams), served by the ASGI `stream` process: where the web process redirects them
# ("" = a proxy routes them), how often its one poller reads new rows, the keep-alive, how long a hole in the
# ids is waited for (a transaction committing late), and how many events a slow client may lag before it is closed.
STREAM_PUBLIC_URL = env("STREAM_PUBLIC_URL", default=f"http://127.0.0.1:{env.int('STREAM_PORT', default=8001)}")
STREAM_POLL_SECONDS = env.float("STREAM_POLL_SECONDS", default=0.2)
STREAM_KEEPALIVE_SECONDS = env.float("STREAM_KEEPALIVE_SECONDS", default=15.0)
STREAM_HOLE_GRACE_SECONDS = env.float("STREAM_HOLE_GRACE_SECONDS", default=1.5)
STREAM_QUEUE_SIZE = env.int("STREAM_QUEUE_SIZE", default=1000)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tasks.api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["tasks.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["tasks.api.renderers.OrjsonRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PAGINATION_CLASS": "tasks.api.pagination.StrictLimitOffsetPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["tasks.api.throttling.ReadThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "submit": env("API_THROTTLE_SUBMIT", default="60/minute"),
        "read": env("API_THROTTLE_READ", default="600/minute"),
    },
    "DEFAULT_SCHEMA_CLASS": "tasks.api.schema.CruxAutoSchema",
    "EXCEPTION_HANDLER": "tasks.api.errors.crux_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Crux API",
    "DESCRIPTION": (
        "Durable background tasks: SQL is the source of truth, Redis a mirror. Authenticate with "
        "`Authorization: Token <key>` or a session; users see and act on their own tasks only, staff on all. "
        'Errors are JSON: `{"detail": message}` or `{field: [messages]}`; a database that refuses (down, full, '
        "locked) answers 503 with Retry-After. Every path also answers in its other trailing-slash form (no redirect). "
        "Text never holds NUL or lone surrogates, numbers are finite, JSON bodies nest at most API_JSON_MAX_DEPTH deep."
    ),
    "VERSION": "0.2.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Swagger UI's default validator badge is an image from validator.swagger.io: nothing leaves the site.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Docstrings are written for the code's readers; what clients read is given with each operation.
    "DISABLE_DOCSTRING_DESCRIPTIONS": True,
    "ENUM_NAME_OVERRIDES": {"TaskStateEnum": "tasks.states.TaskState"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tasks.api.schema.closed_request_bodies",
        "tasks.api.schema.non_empty_enum_lists",
        "tasks.api.schema.storable_strings",
        "tasks.api.schema.retry_after_headers",
        "tasks.api.schema.descending_enum_names",
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
# A confirmed bulk soft delete by staff holding the permission is one deletion operation of up to this many tasks;
# besides the operations per minute above, non-superusers may soft-delete at most DELETE_TASKS_PER_MINUTE tasks a
# minute (never less than one whole bulk).
DELETE_BULK_MAX = env.int("DELETE_BULK_MAX", default=500)
DELETE_TASKS_PER_MINUTE = env.int("DELETE_TASKS_PER_MINUTE", default=1000)
DELETE_SPIKE_WEBHOOK_URL = env("DELETE_SPIKE_WEBHOOK_URL", default="")
BACKUP_DIR = Path(env("BACKUP_DIR", default=str(VAR_DIR / "backups")))
BACKUP_RETENTION_DAYS = env.int("BACKUP_RETENTION_DAYS", default=30)
BACKUP_SECONDS = env.float("BACKUP_SECONDS", default=86400.0)
CELERY_BEAT_SCHEDULE["daily-backup"] = {"task": "crux.backup", "schedule": BACKUP_SECONDS}
# Every backup is restore-tested (persistence.drills); an hourly check alerts when no drill passed within this window.
BACKUP_DRILL_MAX_AGE_SECONDS = env.float("BACKUP_DRILL_MAX_AGE_SECONDS", default=2 * 86400.0)
CELERY_BEAT_SCHEDULE["backup-drill-check"] = {"task": "crux.check_backup_drills", "schedule": 3600.0}
# SQLite only: a snapshot of the database (online backup API; writers never wait for it) into BACKUP_DIR/snapshots/,
# the newest SQLITE_SNAPSHOT_KEEP kept, so a lost disk loses at most this interval (0: none). The job looks every tick
# and starts one early by the last one's own duration (persistence.snapshots.snapshot_due).
SQLITE_SNAPSHOT_SECONDS = env.float("SQLITE_SNAPSHOT_SECONDS", default=300.0)
SQLITE_SNAPSHOT_KEEP = env.int("SQLITE_SNAPSHOT_KEEP", default=24)
SQLITE_SNAPSHOT_TICK_SECONDS = min(10.0, SQLITE_SNAPSHOT_SECONDS / 10)
if SQLITE_SNAPSHOT_SECONDS > 0 and DATABASES["default"]["ENGINE"] == "crux.db":
    CELERY_BEAT_SCHEDULE["sqlite-snapshot"] = {"task": "crux.sqlite_snapshot", "schedule": SQLITE_SNAPSHOT_TICK_SECONDS}
# SQLite only: how often beat's job checks the planner's statistics of the task table (persistence.planner), taken
# again once the table has grown or shrunk by a quarter since (0: never).
SQLITE_STATISTICS_SECONDS = env.float("SQLITE_STATISTICS_SECONDS", default=3600.0)
if SQLITE_STATISTICS_SECONDS > 0 and DATABASES["default"]["ENGINE"] == "crux.db":
    CELERY_BEAT_SCHEDULE["sqlite-statistics"] = {
        "task": "crux.sqlite_statistics",
        "schedule": SQLITE_STATISTICS_SECONDS,
    }
# SQLite only: how often beat's job merges the search index's segments into one (persistence.planner; 0: never).
SQLITE_SEARCH_MERGE_SECONDS = env.float("SQLITE_SEARCH_MERGE_SECONDS", default=3600.0)
if SQLITE_SEARCH_MERGE_SECONDS > 0 and DATABASES["default"]["ENGINE"] == "crux.db":
    CELERY_BEAT_SCHEDULE["search-index-merge"] = {
        "task": "crux.search_index_merge",
        "schedule": SQLITE_SEARCH_MERGE_SECONDS,
    }
# A second location for backups and purge archives, each copy verified by checksum: the storage alias "backups_copy"
# (Django's storage API), a FileSystemStorage at BACKUP_COPY_DIR here (unset: no copy); any other backend, such as
# django-storages' S3Storage, is a matter of configuring that alias.
BACKUP_COPY_DIR = env("BACKUP_COPY_DIR", default="")
if BACKUP_COPY_DIR:
    STORAGES["backups_copy"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": BACKUP_COPY_DIR, "file_permissions_mode": 0o600, "directory_permissions_mode": 0o700},
    }


# --- Audit keys and checkpoints: history, purge grants and tombstones are signed (HMAC-SHA256) with a key kept
# outside the database. AUDIT_KEYS: "id:secret" items, newest first (new signatures use the first; each names its
# key id, so older rows keep verifying); else the lines of AUDIT_KEY_FILE (`make keys` writes a bare secret there).
AUDIT_KEY_FILE, AUDIT_KEYS = _keys(
    "audit key", "AUDIT_KEYS", env.list("AUDIT_KEYS", default=[]), "AUDIT_KEY_FILE", "debug:insecure-debug-audit-key"
)
# Signed checkpoints of every task's chain head and the purge ledger's, written outside the database.
AUDIT_CHECKPOINT_DIR = Path(env("AUDIT_CHECKPOINT_DIR", default=str(BACKUP_DIR / "checkpoints")))
AUDIT_CHECKPOINT_SECONDS = env.float("AUDIT_CHECKPOINT_SECONDS", default=3600.0)
CELERY_BEAT_SCHEDULE["audit-checkpoint"] = {"task": "crux.audit_checkpoint", "schedule": AUDIT_CHECKPOINT_SECONDS}
# How often beat adds the history rows written since to the tally /metrics reads (tasks.services.tally).
HISTORY_TALLY_SECONDS = env.float("HISTORY_TALLY_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE["history-tally"] = {"task": "crux.history_tally", "schedule": HISTORY_TALLY_SECONDS}
if ENABLE_AUTO_PURGE:
    CELERY_BEAT_SCHEDULE["auto-purge"] = {"task": "crux.auto_purge", "schedule": AUTO_PURGE_SECONDS}

# Every process (web, worker, beat, commands) logs through this one handler, behind a filter that masks credentials
# in messages, arguments and tracebacks (tasks.redaction). Django's loggers hand their records to it instead of
# handlers of their own; Celery's processes use this configuration too (crux.celery), gunicorn's logs the same filter
# (crux.gunicorn_conf).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "tasks.redaction.RedactingFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "loggers": {
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": [], "level": "INFO", "propagate": True},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

# --- REST API, continued: throttle counters, health checks and metrics.
# Throttle counters live in Redis (this alias, so they can be pointed elsewhere)
# under REDIS_KEY_PREFIX; if Redis is down they fail open (tasks.api.throttling).
CACHES["throttle"] = dict(CACHES["default"])
INSTALLED_APPS += ["drf_spectacular_sidecar"]
# Seconds readiness (GET /api/health/ready) waits for all its checks together (database write, Redis, broker,
# a worker's ping); a part that has not answered by then is reported failing (crux/health.py).
HEALTH_TIMEOUT = env.float("HEALTH_TIMEOUT", default=0.2)
# A bearer token that lets a Prometheus scraper read /metrics without a staff account ("" = staff only).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
# prometheus-client's multiprocess mode: every process (gunicorn workers, Celery pool processes, beat, commands)
# keeps its counters and histograms in files of this directory and /metrics sums them (crux/metrics.py). The
# variable must be in the environment before prometheus_client is imported (it picks its mode then): set here, and
# gunicorn's master reads these settings first (crux/gunicorn_conf.py). The release step clears files of processes
# that are gone (``manage.py clear_metrics``).
PROMETHEUS_MULTIPROC_DIR = Path(env("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus")))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
# Mirror entries /metrics compares with SQL at each scrape (the newest tasks that should be mirrored).
METRICS_MIRROR_SAMPLE = env.int("METRICS_MIRROR_SAMPLE", default=500)
# Histogram buckets (seconds) of task run time and queue wait (crux_task_duration_seconds, _queue_wait_seconds).
METRICS_DURATION_BUCKETS = env.list(
    "METRICS_DURATION_BUCKETS", cast=float, default=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]
)
# How often a housekeeping job verifies the whole audit trail and records the result (crux_audit_chain_ok).
AUDIT_VERIFY_SECONDS = env.float("AUDIT_VERIFY_SECONDS", default=86400.0)
CELERY_BEAT_SCHEDULE["verify-audit"] = {"task": "crux.verify_audit", "schedule": AUDIT_VERIFY_SECONDS}

# Crux: two commands do all set-up on a fresh machine.
#   make run   - virtualenv, install, migrate, then web + stream + worker + housekeeping + beat (SQLite, local Redis)
#   make test  - virtualenv, install, lint (ruff, import layers, mypy), migration check, the suite on SQLite and on PostgreSQL
#   make bench - every benchmark of BENCHMARKS.md and one table (BENCH_ENGINES=sqlite,postgres BENCH_SIZES=10000,100000,1000000)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
STREAM_PORT ?= 8001
ADMIN_USER ?= admin
ADMIN_PASSWORD ?= crux-admin
SQLITE_URL := sqlite:///$(CURDIR)/var/crux.sqlite3
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=
BENCH_ENGINES ?= sqlite,postgres
BENCH_SIZES ?= 10000,100000,1000000
SECRET_KEY_FILE ?= var/secret_key
AUDIT_KEY_FILE ?= var/audit_key

.PHONY: run test test-sqlite test-postgres lint venv browser promtool pgbackrest bench keys

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

# The Django secret key and the audit chain key, kept outside the database and the repository (var/ is gitignored):
# each file is created once, readable by its owner only, and never overwritten (README, "Deployment").
keys:
	@for f in $(SECRET_KEY_FILE) $(AUDIT_KEY_FILE); do \
	  test -s "$$f" && continue; \
	  mkdir -p "$$(dirname "$$f")" && \
	  (umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > "$$f.tmp") && \
	  mv "$$f.tmp" "$$f" && echo "created $$f" || exit 1; \
	done

# The admin's browser test drives Debian's chromium through Playwright (never `playwright install`).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing chromium for the browser test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The point-in-time recovery test and bench.restore's physical restore run a private PostgreSQL cluster whose WAL
# pgBackRest archives (Debian's package).
pgbackrest:
	@command -v pgbackrest >/dev/null 2>&1 || { \
	  echo "Installing pgbackrest for the point-in-time recovery test and the restore benchmark"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest; }

# The metrics test checks /metrics and deploy/prometheus/alerts.yml with promtool, from Debian's prometheus package.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "Installing prometheus for promtool (the metrics test)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }

run: venv keys
	mkdir -p var
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start release
	$(BIN)/python manage.py shell -c "from django.contrib.auth import get_user_model as m; \
	U = m(); U.objects.filter(username='$(ADMIN_USER)').exists() or \
	U.objects.create_superuser('$(ADMIN_USER)', '$(ADMIN_USER)@localhost', '$(ADMIN_PASSWORD)')"
	@echo
	@echo "  Crux is starting:  admin  http://127.0.0.1:$(PORT)/admin/   (log in as $(ADMIN_USER) / $(ADMIN_PASSWORD))"
	@echo "                     API    http://127.0.0.1:$(PORT)/api/     docs http://127.0.0.1:$(PORT)/api/docs/"
	@echo "                     events http://127.0.0.1:$(STREAM_PORT)/api/tasks/ID/events   (Server-Sent Events)"
	@echo "  Stop with Ctrl-C."
	@echo
	STREAM_PORT=$(STREAM_PORT) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start --port $(PORT) web stream worker housekeeping beat

lint: venv keys
	mkdir -p var
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run

test-sqlite: venv keys browser promtool
	mkdir -p var
	DATABASE_URL=$(SQLITE_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: venv keys browser promtool pgbackrest
	DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint test-sqlite test-postgres

# Benchmarks (BENCHMARKS.md): data sets under var/bench/ or PostgreSQL databases crux_bench_*; wrk for HTTP.
bench: venv keys pgbackrest
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "Installing wrk for the HTTP benchmark"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
	mkdir -p var/bench
	$(BIN)/python -m bench --engines $(BENCH_ENGINES) --sizes $(BENCH_SIZES)

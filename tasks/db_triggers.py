"""Database triggers that make task history append-only below the ORM.

UPDATE of a history row is always refused. DELETE is refused unless the row's
task holds a HistoryPurgeGrant whose MAC is valid: the narrow hook the retention
purge uses for a whole task it has archived. An INSERTed grant cannot forge it:
the MAC is over (task id, nonce) under the grant key derived from the audit key
(``tasks.keys``), which the database never stores.

- SQLite: the trigger calls ``crux_grant_mac()``, a function each Crux connection
  registers (``register_functions``, on ``connection_created``). Another client
  (the ``sqlite3`` shell, a script) has no such function, or not the key: its
  DELETE fails.
- PostgreSQL: the trigger computes the MAC with pgcrypto's ``hmac()`` under the
  grant key the purge hands its own transaction (``admit_purge``: ``SET LOCAL``),
  and accepts only a key whose sha256 is one of the configured keys' (baked into
  the function at install; ``migrate`` re-installs it, so a key added to
  AUDIT_KEYS is accepted after the next ``migrate``).

Used by migrations (and by tests that tamper on purpose).
"""

import uuid
from typing import Any

from tasks import keys

UPDATE_MESSAGE = "crux: task history is append-only (UPDATE refused)"
DELETE_MESSAGE = "crux: task history is append-only (DELETE refused outside a retention purge)"
HISTORY_TRIGGERS = ("tasks_taskhistory_no_update", "tasks_taskhistory_no_delete")
SQLITE_GRANT_FUNCTION = "crux_grant_mac"
POSTGRES_GRANT_SETTING = "crux.purge_grant_key"

_SQLITE_INSTALL = [
    f"""
    CREATE TRIGGER IF NOT EXISTS tasks_taskhistory_no_update
    BEFORE UPDATE ON tasks_taskhistory
    BEGIN SELECT RAISE(ABORT, '{UPDATE_MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS tasks_taskhistory_no_delete
    BEFORE DELETE ON tasks_taskhistory
    WHEN NOT EXISTS (
        SELECT 1 FROM tasks_historypurgegrant g
        WHERE g.task_id = OLD.task_id AND g.mac = {SQLITE_GRANT_FUNCTION}(g.task_id, g.nonce)
    )
    BEGIN SELECT RAISE(ABORT, '{DELETE_MESSAGE}'); END
    """,
]
_SQLITE_UNINSTALL = [f"DROP TRIGGER IF EXISTS {name}" for name in HISTORY_TRIGGERS]


def _postgres_delete_function() -> str:
    """The DELETE trigger's function, accepting the grant keys of the configured audit keys."""
    accepted = ", ".join(f"'{fingerprint}'" for fingerprint in keys.grant_key_fingerprints())
    return f"""
    CREATE OR REPLACE FUNCTION crux_taskhistory_no_delete() RETURNS trigger AS $$
    DECLARE
        grant_key text := current_setting('{POSTGRES_GRANT_SETTING}', true);
    BEGIN
        IF grant_key IS NULL
           OR encode(digest(grant_key, 'sha256'), 'hex') <> ALL (ARRAY[{accepted}]::text[])
           OR NOT EXISTS (
               SELECT 1 FROM tasks_historypurgegrant g
               WHERE g.task_id = OLD.task_id
                 AND g.mac = encode(hmac(replace(g.task_id::text, '-', '') || ':' || g.nonce, grant_key, 'sha256'),
                                    'hex')
           )
        THEN
            RAISE EXCEPTION '{DELETE_MESSAGE}';
        END IF;
        RETURN OLD;
    END
    $$ LANGUAGE plpgsql
    """


def _postgres_install() -> list[str]:
    return [
        "CREATE EXTENSION IF NOT EXISTS pgcrypto",
        f"""
        CREATE OR REPLACE FUNCTION crux_taskhistory_no_update() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION '{UPDATE_MESSAGE}'; END
        $$ LANGUAGE plpgsql
        """,
        _postgres_delete_function(),
        """
        CREATE OR REPLACE TRIGGER tasks_taskhistory_no_update
        BEFORE UPDATE ON tasks_taskhistory FOR EACH ROW EXECUTE FUNCTION crux_taskhistory_no_update()
        """,
        """
        CREATE OR REPLACE TRIGGER tasks_taskhistory_no_delete
        BEFORE DELETE ON tasks_taskhistory FOR EACH ROW EXECUTE FUNCTION crux_taskhistory_no_delete()
        """,
    ]


_POSTGRES_UNINSTALL = [
    "DROP TRIGGER IF EXISTS tasks_taskhistory_no_update ON tasks_taskhistory",
    "DROP TRIGGER IF EXISTS tasks_taskhistory_no_delete ON tasks_taskhistory",
    "DROP FUNCTION IF EXISTS crux_taskhistory_no_update()",
    "DROP FUNCTION IF EXISTS crux_taskhistory_no_delete()",
]  # pgcrypto stays: other objects of the database may use it


def _run(connection: Any, statements: dict[str, tuple[list[str], list[str]]], install: bool) -> bool:
    """Run the install (or uninstall) statements of ``connection``'s vendor; False if it has none."""
    if connection.vendor not in statements:
        return False
    with connection.cursor() as cursor:
        for statement in statements[connection.vendor][0 if install else 1]:
            cursor.execute(statement)
    return True


def _run_history(connection: Any, install: bool) -> None:
    statements = {"sqlite": (_SQLITE_INSTALL, _SQLITE_UNINSTALL)}
    if connection.vendor == "postgresql":
        statements["postgresql"] = (_postgres_install() if install else [], _POSTGRES_UNINSTALL)
    if not _run(connection, statements, install):
        raise NotImplementedError(f"no append-only triggers for database vendor {connection.vendor!r}")


def install(connection: Any) -> None:
    _run_history(connection, install=True)


def uninstall(connection: Any) -> None:
    _run_history(connection, install=False)


def refresh_accepted_keys(connection: Any) -> None:
    """PostgreSQL: re-install the DELETE trigger's function for the audit keys configured now (after ``migrate``),
    where it is installed; SQLite checks grants in the process, with the keys it has."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_proc WHERE proname = 'crux_taskhistory_no_delete'")
        if cursor.fetchone():
            cursor.execute(_postgres_delete_function())


def register_functions(connection: Any) -> None:
    """SQLite: give this connection the grant check the history DELETE trigger calls."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(SQLITE_GRANT_FUNCTION, 2, _sqlite_grant_mac, deterministic=True)


def _sqlite_grant_mac(task_id: bytes | str | None, nonce: str | None) -> str | None:
    """The grant's MAC; its task id as the column holds it (16 bytes, or 32 hex digits before migration 0019)."""
    if task_id is None or nonce is None:
        return None
    return keys.grant_mac(uuid.UUID(bytes=task_id) if isinstance(task_id, bytes) else task_id, nonce)


def admit_purge(connection: Any) -> None:
    """Hand this transaction the grant key (PostgreSQL: ``SET LOCAL``; the transaction's end forgets it)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [POSTGRES_GRANT_SETTING, keys.grant_key()])


def installed_history_triggers(connection: Any) -> set[str]:
    """The append-only triggers present in the database (``verify_audit`` names a missing one)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tasks_taskhistory'")
        else:
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'tasks_taskhistory'::regclass")
        return {name for (name,) in cursor.fetchall()} & set(HISTORY_TRIGGERS)


# --- Text search index: what `search` (tasks.selectors.search.search_tasks) looks words up in.
#
# PostgreSQL: pg_trgm GIN indexes on UPPER(title) and UPPER(description), the very expressions Django's
# ``icontains`` compiles to there, so the unchanged ``LIKE`` query uses them.
#
# SQLite: an FTS5 table with the trigram tokenizer (case-insensitive) over the title and description,
# kept by triggers on tasks_task. External content (the text stays in tasks_task only) keyed by
# tasks_task's implicit rowid, with detail='none' and no column sizes: it answers "which rows hold all
# these trigrams", a superset of the substring matches that the search then narrows with the same
# ``LIKE`` as ever (so results never depend on the index being exact). A table remake (some AlterField
# migrations on SQLite) or a VACUUM may renumber the implicit rowids and drops the triggers:
# ``install_search`` again re-creates the triggers and rebuilds the index from tasks_task.
SEARCH_TABLE = "tasks_task_search"
SEARCH_TRIGGERS = ("tasks_task_search_insert", "tasks_task_search_delete", "tasks_task_search_update")

_SQLITE_SEARCH_INSTALL = [
    f"""
    CREATE VIRTUAL TABLE IF NOT EXISTS {SEARCH_TABLE} USING fts5(
        title, description,
        content='tasks_task', content_rowid='rowid', tokenize='trigram', detail='none', columnsize=0
    )
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS tasks_task_search_insert AFTER INSERT ON tasks_task BEGIN
        INSERT INTO {SEARCH_TABLE}(rowid, title, description) VALUES (new.rowid, new.title, new.description);
    END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS tasks_task_search_delete AFTER DELETE ON tasks_task BEGIN
        INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, title, description)
        VALUES ('delete', old.rowid, old.title, old.description);
    END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS tasks_task_search_update AFTER UPDATE OF title, description ON tasks_task
    WHEN old.title IS NOT new.title OR old.description IS NOT new.description
    BEGIN
        INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, title, description)
        VALUES ('delete', old.rowid, old.title, old.description);
        INSERT INTO {SEARCH_TABLE}(rowid, title, description) VALUES (new.rowid, new.title, new.description);
    END
    """,
    f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('rebuild')",
]
_SQLITE_SEARCH_UNINSTALL = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in SEARCH_TRIGGERS),
    f"DROP TABLE IF EXISTS {SEARCH_TABLE}",
]

_POSTGRES_SEARCH_INSTALL = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS task_title_trgm ON tasks_task USING gin (UPPER(title::text) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS task_description_trgm ON tasks_task USING gin (UPPER(description::text) gin_trgm_ops)",
]
_POSTGRES_SEARCH_UNINSTALL = [
    "DROP INDEX IF EXISTS task_title_trgm",
    "DROP INDEX IF EXISTS task_description_trgm",
]  # pg_trgm stays: other objects of the database may use it

_SEARCH_STATEMENTS = {
    "sqlite": (_SQLITE_SEARCH_INSTALL, _SQLITE_SEARCH_UNINSTALL),
    "postgresql": (_POSTGRES_SEARCH_INSTALL, _POSTGRES_SEARCH_UNINSTALL),
}


def install_search(connection: Any) -> None:
    """Create the search index (idempotent) and, on SQLite, its triggers, then rebuild it from tasks_task.
    Another database has none: search scans there, as it always did."""
    _run(connection, _SEARCH_STATEMENTS, install=True)


def uninstall_search(connection: Any) -> None:
    _run(connection, _SEARCH_STATEMENTS, install=False)


def drop_search_triggers(connection: Any) -> None:
    """SQLite: stop keeping the search index (a bulk load); ``install_search`` restores and rebuilds it."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            for name in SEARCH_TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")

"""Database triggers that make task history append-only below the ORM.

UPDATE of a history row is always refused. DELETE is refused unless the row's
task holds a HistoryPurgeGrant: the narrow hook the retention purge uses for a
whole task it has archived. Used by migrations (and by tests that tamper on purpose).
"""

from typing import Any

UPDATE_MESSAGE = "crux: task history is append-only (UPDATE refused)"
DELETE_MESSAGE = "crux: task history is append-only (DELETE refused outside a retention purge)"

_SQLITE_INSTALL = [
    f"""
    CREATE TRIGGER IF NOT EXISTS tasks_taskhistory_no_update
    BEFORE UPDATE ON tasks_taskhistory
    BEGIN SELECT RAISE(ABORT, '{UPDATE_MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS tasks_taskhistory_no_delete
    BEFORE DELETE ON tasks_taskhistory
    WHEN NOT EXISTS (SELECT 1 FROM tasks_historypurgegrant g WHERE g.task_id = OLD.task_id)
    BEGIN SELECT RAISE(ABORT, '{DELETE_MESSAGE}'); END
    """,
]
_SQLITE_UNINSTALL = [
    "DROP TRIGGER IF EXISTS tasks_taskhistory_no_update",
    "DROP TRIGGER IF EXISTS tasks_taskhistory_no_delete",
]

_POSTGRES_INSTALL = [
    f"""
    CREATE OR REPLACE FUNCTION crux_taskhistory_no_update() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION '{UPDATE_MESSAGE}'; END
    $$ LANGUAGE plpgsql
    """,
    f"""
    CREATE OR REPLACE FUNCTION crux_taskhistory_no_delete() RETURNS trigger AS $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM tasks_historypurgegrant g WHERE g.task_id = OLD.task_id) THEN
            RAISE EXCEPTION '{DELETE_MESSAGE}';
        END IF;
        RETURN OLD;
    END
    $$ LANGUAGE plpgsql
    """,
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
]

_STATEMENTS = {
    "sqlite": (_SQLITE_INSTALL, _SQLITE_UNINSTALL),
    "postgresql": (_POSTGRES_INSTALL, _POSTGRES_UNINSTALL),
}


def _run(connection: Any, install: bool) -> None:
    if connection.vendor not in _STATEMENTS:
        raise NotImplementedError(f"no append-only triggers for database vendor {connection.vendor!r}")
    statements = _STATEMENTS[connection.vendor][0 if install else 1]
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def install(connection: Any) -> None:
    _run(connection, install=True)


def uninstall(connection: Any) -> None:
    _run(connection, install=False)

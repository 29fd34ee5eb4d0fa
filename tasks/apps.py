from typing import Any

from django.apps import AppConfig
from django.db import connections
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    from tasks import db_triggers

    db_triggers.register_functions(connection)


def _on_post_migrate(sender: AppConfig, using: str, **kwargs: Any) -> None:
    from tasks import db_triggers

    db_triggers.refresh_accepted_keys(connections[using])


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        from tasks import history, redaction

        redaction.connect()  # first: a row is redacted before the history writer diffs it
        history.connect()
        # The history DELETE trigger checks purge grants with the audit keys (tasks.db_triggers).
        connection_created.connect(_on_connection_created, dispatch_uid="tasks.db_triggers.register_functions")
        post_migrate.connect(_on_post_migrate, sender=self, dispatch_uid="tasks.db_triggers.refresh_accepted_keys")

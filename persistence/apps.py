from django.apps import AppConfig


class PersistenceConfig(AppConfig):
    name = "persistence"
    verbose_name = "Persistence"

    def ready(self) -> None:
        from persistence import dispatch, selectors, signals
        from tasks import hooks

        signals.connect()
        dispatch.connect()
        hooks.add_task_witness("the Redis mirror", selectors.mirrored_task_ids)
        hooks.add_task_witness("Celery's results", selectors.executed_task_ids)

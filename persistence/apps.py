from django.apps import AppConfig


class PersistenceConfig(AppConfig):
    name = "persistence"
    verbose_name = "Persistence"

    def ready(self) -> None:
        from persistence import signals

        signals.connect()

from django.apps import AppConfig


class RetentionConfig(AppConfig):
    name = "retention"
    verbose_name = "Retention"

    def ready(self) -> None:
        from retention.breaker import admit_deletion
        from tasks import hooks

        hooks.add_deletion_guard(admit_deletion)

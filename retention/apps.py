from django.apps import AppConfig


class RetentionConfig(AppConfig):
    name = "retention"
    verbose_name = "Retention"

    def ready(self) -> None:
        from retention.breaker import admit_deletion
        from retention.models import SignedPurgeLedger
        from tasks import hooks

        hooks.add_deletion_guard(admit_deletion)
        hooks.set_purge_ledger(SignedPurgeLedger())

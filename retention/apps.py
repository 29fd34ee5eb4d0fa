from django.apps import AppConfig


class RetentionConfig(AppConfig):
    name = "retention"
    verbose_name = "Retention"

    def ready(self) -> None:
        from retention.breaker import admit_deletion, deletion_refusal
        from retention.models import SignedPurgeLedger
        from tasks import hooks

        hooks.add_deletion_guard(admit_deletion, deletion_refusal)
        hooks.set_purge_ledger(SignedPurgeLedger())

"""The project's app: it wires the alerts and the attempt figures of the apps below to their receivers (they do
not import each other)."""

from django.apps import AppConfig
from django.conf import settings


class CruxConfig(AppConfig):
    name = "crux"
    verbose_name = "Crux"

    def ready(self) -> None:
        from crux.celery import observe_attempt
        from persistence.drills import drill_alert
        from tasks import hooks

        drill_alert.connect(post_drill_alert, dispatch_uid="crux.drill_alert.webhook")
        hooks.attempt_ended.connect(observe_attempt, dispatch_uid="crux.celery.observe_attempt")


def post_drill_alert(sender: type, message: str, **kwargs: object) -> None:
    """A failed or overdue backup drill goes to the operators' webhook, the one the deletion breaker alerts."""
    from retention.breaker import post_webhook

    if settings.DELETE_SPIKE_WEBHOOK_URL:
        post_webhook(settings.DELETE_SPIKE_WEBHOOK_URL, message, event="backup_drill")

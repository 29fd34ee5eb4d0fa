"""Beat job of retention: the automatic purge (off unless ENABLE_AUTO_PURGE)."""

from celery import shared_task

from retention.services import purge
from tasks.audit import Channel


@shared_task(name="crux.auto_purge")
def auto_purge() -> dict[str, object]:
    report = purge(actor="system:retention", channel=Channel.RETENTION, confirm=True)
    return {"purged": report.purged, "archive": report.archive_file}

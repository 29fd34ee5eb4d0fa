"""Beat job of retention: the automatic purge (off unless ENABLE_AUTO_PURGE)."""

import logging

from celery import shared_task

from retention.services import purge
from tasks.audit import Channel

logger = logging.getLogger(__name__)


@shared_task(name="crux.auto_purge", ignore_result=True)
def auto_purge() -> dict[str, object]:
    """Purge what the retention policies allow; no result row (the purge ledger records each task); logs if it did."""
    report = purge(actor="system:retention", channel=Channel.RETENTION, confirm=True)
    if report.purged:
        logger.info("auto purge: %s tasks archived to %s and purged", report.purged, report.archive_file)
    return {"purged": report.purged, "archive": report.archive_file}

"""Beat jobs of retention: the automatic purge (off unless ENABLE_AUTO_PURGE) and the daily backup."""

import logging

from celery import shared_task

from persistence.backup import backup
from retention.services import purge
from tasks.audit import Channel

logger = logging.getLogger(__name__)


@shared_task(name="crux.auto_purge")
def auto_purge() -> dict[str, object]:
    report = purge(actor="system:retention", channel=Channel.RETENTION, confirm=True)
    return {"purged": report.purged, "archive": report.archive_file}


@shared_task(name="crux.backup")
def daily_backup() -> str:
    result = backup()
    logger.info("backup written: %s (%s)", result.path, result.checksum)
    return str(result.path)

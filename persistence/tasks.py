"""Beat jobs of persistence: the daily backup, and the mirror reconcile (it heals a write lost while Redis was away)."""

import logging

from celery import shared_task

from persistence.backup import backup
from persistence.services import reconcile_mirror

logger = logging.getLogger(__name__)


@shared_task(name="crux.reconcile_mirror")
def reconcile_mirror_task() -> dict[str, int]:
    report = reconcile_mirror()
    if report.drift:
        logger.warning(
            "mirror drift repaired: missing %s, stale %s, orphan %s", report.missing, report.stale, report.orphan
        )
    return {"checked": report.checked, "missing": report.missing, "stale": report.stale, "orphan": report.orphan}


@shared_task(name="crux.backup")
def daily_backup() -> str:
    result = backup()
    logger.info("backup written: %s (%s)", result.path, result.checksum)
    return str(result.path)

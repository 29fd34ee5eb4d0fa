"""Beat jobs of retention: the automatic purge (off unless ENABLE_AUTO_PURGE), the audit trail's verification."""

import logging

from celery import shared_task

from retention.services import purge, record_audit_verification
from tasks.audit import Channel

logger = logging.getLogger(__name__)


@shared_task(name="crux.auto_purge", ignore_result=True)
def auto_purge() -> dict[str, object]:
    """Purge what the retention policies allow; no result row (the purge ledger records each task); logs if it did."""
    report = purge(actor="system:retention", channel=Channel.RETENTION, confirm=True)
    if report.purged:
        logger.info("auto purge: %s tasks archived to %s and purged", report.purged, report.archive_file)
    return {"purged": report.purged, "archive": report.archive_file}


@shared_task(name="crux.verify_audit", ignore_result=True)
def verify_audit() -> dict[str, int]:
    """Verify the whole audit trail and record the result (``crux_audit_chain_ok`` on /metrics); every
    AUDIT_VERIFY_SECONDS from beat, on the housekeeping queue."""
    result = record_audit_verification()
    return {"tasks_checked": result.tasks_checked, "problems": result.problems}

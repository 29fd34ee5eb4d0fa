"""Housekeeping jobs (beat, on the housekeeping queue): the recovery sweep, due tasks, the mirror reconcile, the daily
backup and its restore drill, the check that drills keep passing, SQLite snapshots, planner statistics and search index
merges."""

import logging

from celery import shared_task
from redis.exceptions import RedisError

from persistence.backup import backup
from persistence.dispatch import redispatch_lost
from persistence.drills import check_drills, run_drill
from persistence.models import DrillTrigger
from persistence.planner import merge_search_index, refresh_statistics
from persistence.services import reconcile_mirror
from persistence.snapshots import enabled, snapshot_due, snapshots, take_snapshot
from tasks import services

logger = logging.getLogger(__name__)


@shared_task(name="crux.recovery_sweep", ignore_result=True)
def recovery_sweep() -> dict[str, int]:
    """Interrupt tasks whose worker is gone (lease expired) and re-publish queued tasks whose message is lost."""
    counts = services.recover_orphans()
    try:
        counts["redispatched"] = redispatch_lost()
    except RedisError as exc:
        logger.warning("re-dispatch skipped: the broker's Redis is unreachable (%s)", exc)
    if any(counts.values()):
        logger.warning("recovery sweep: %s", counts)
    return counts


@shared_task(name="crux.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Publish the queued tasks whose start time (run_at, a retry's wait) has come: the waits live in SQL, never
    in a broker ETA (which Redis redelivers after its visibility timeout and loses on some shutdowns)."""
    published = services.publish_due()
    if published:
        logger.info("published %s tasks whose start time has come", published)
    return published


@shared_task(name="crux.reconcile_mirror", ignore_result=True)
def reconcile_mirror_task() -> dict[str, int]:
    report = reconcile_mirror()
    if report.drift:
        logger.warning(
            "mirror drift repaired: missing %s, stale %s, orphan %s", report.missing, report.stale, report.orphan
        )
    return {
        "checked": report.checked,
        "missing": report.missing,
        "stale": report.stale,
        "orphan": report.orphan,
        "vanished": report.vanished,
    }


@shared_task(name="crux.backup", ignore_result=True)
def daily_backup() -> str:
    """Write the backup, then prove it: restore it into a scratch database (a failure alerts). On SQLite the newest
    snapshot is drilled too, so the file an operator would restore after losing the disk is proven daily as well."""
    result = backup()
    logger.info("backup written: %s (%s)", result.path, result.checksum)
    run_drill(result.path, trigger=DrillTrigger.AFTER_BACKUP)
    taken = snapshots() if enabled() else []
    if taken:
        run_drill(taken[-1], trigger=DrillTrigger.AFTER_BACKUP)
    return str(result.path)


@shared_task(name="crux.drill_backup", ignore_result=True)
def drill_backup(actor: str) -> bool:
    """A drill of the newest backup asked for by ``actor`` (the admin's button): run here, on the housekeeping
    queue, since a drill of a large backup outlasts any web request. Recorded and alerted like every drill."""
    return run_drill(trigger=DrillTrigger.ADMIN, actor=actor).ok


@shared_task(name="crux.check_backup_drills", ignore_result=True)
def check_backup_drills() -> str | None:
    """Alert when no restore drill passed within BACKUP_DRILL_MAX_AGE_SECONDS."""
    return check_drills()


@shared_task(name="crux.sqlite_snapshot", ignore_result=True)
def sqlite_snapshot() -> str | None:
    """Snapshot the SQLite database when one is due (the recovery point between daily backups, within
    SQLITE_SNAPSHOT_SECONDS); nothing on PostgreSQL or when SQLITE_SNAPSHOT_SECONDS is 0."""
    if not enabled() or not snapshot_due():
        return None
    result = take_snapshot()
    logger.info("snapshot written in %.2fs: %s (%s)", result.seconds, result.path, result.checksum)
    return str(result.path)


@shared_task(name="crux.sqlite_statistics", ignore_result=True)
def sqlite_statistics() -> bool:
    """Refresh SQLite's planner statistics of the task table when it has grown or shrunk by a quarter (or has
    none); nothing on PostgreSQL."""
    analyzed = refresh_statistics()
    if analyzed:
        logger.info("planner statistics of the task table refreshed")
    return analyzed


@shared_task(name="crux.search_index_merge", ignore_result=True)
def search_index_merge() -> int:
    """Merge SQLite's search index into one segment when inserts have split it (persistence.planner); the steps
    that merged something. Nothing on PostgreSQL."""
    steps = merge_search_index()
    if steps:
        logger.info("search index merged in %d steps", steps)
    return steps

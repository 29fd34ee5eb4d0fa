"""Beat's scheduler (``CELERY_BEAT_SCHEDULER``): django-celery-beat's schedule in SQL, sent by one beat at a time.

Each tick checks the scheduler lease, a row in SQL taken and renewed by compare-and-set (``tasks.services``); a beat
that does not hold it sends nothing, neither staff's schedules nor the housekeeping entries of
``CELERY_BEAT_SCHEDULE``, and logs once that it stands by. The leader writes an entry's last run to SQL right after
sending it (entries of a shorter period than the lease: every half lease); a beat taking over reads them back first,
so the takeover sends only what is due, not everything again. The lease lives in SQL, so a flush or restart of Redis
changes nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

from celery import schedules
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from tasks import services
from tasks.models import SchedulerLease

logger = logging.getLogger(__name__)


class Entry(ModelEntry):
    """django-celery-beat's entry, keeping a period of a fraction of a second (``RECOVERY_SWEEP_SECONDS=0.5``).

    Its interval stores whole seconds in an integer column, so 0.5 s would be read back as 0 (on PostgreSQL; SQLite
    keeps the 0.5) and beat would send the entry in a tight loop; such a period is stored in microseconds instead.
    """

    @classmethod
    def to_model_schedule(cls, schedule: Any) -> tuple[Any, str]:
        interval = schedules.maybe_schedule(schedule)
        seconds = float(interval.seconds) if type(interval) is schedules.schedule else 0.0
        if not seconds.is_integer():
            every = round(seconds * 1_000_000)
            model, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.MICROSECONDS)
            return model, "interval"
        result: tuple[Any, str] = super().to_model_schedule(schedule)
        return result


class GuardedScheduler(DatabaseScheduler):
    """A ``DatabaseScheduler`` that sends only while it holds the scheduler lease."""

    Entry = Entry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lease_seconds = float(settings.SCHEDULER_LEASE_SECONDS)
        # Renewed every quarter of the lease (not every tick: each renewal is a write, which SQLite serialises with
        # the workers'); nothing is sent under a renewal older than three quarters of it.
        self.renew_every = self.lease_seconds / 4
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leading = False
        self._renewed_at: float | None = None
        self._standby_logged = False
        super().__init__(*args, **kwargs)
        # Tick a few times per lease: the leader renews in time, a standby notices an expired lease promptly.
        self.max_interval: float = min(float(self.max_interval), self.lease_seconds / 4)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold_lease():
            return float(self.max_interval)
        result: float = super().tick(*args, **kwargs)
        return result

    def _hold_lease(self) -> bool:
        started = time.monotonic()
        if self.leading and self._renewed_at is not None and started - self._renewed_at < self.renew_every:
            return True
        try:
            close_old_connections()
            held = services.hold_scheduler_lease(self.holder, self.lease_seconds)
            if held and not self.leading:
                self._take_over()
        except DatabaseError as exc:
            logger.warning("beat %s: cannot reach the scheduler lease (%s); sending nothing", self.holder, exc)
            held = False
        if not held and (self.leading or not self._standby_logged):
            self._stand_by()
        self.leading = held
        self._renewed_at = started if held else None
        return held

    def remove_stale_entries(self) -> list[str]:
        """Delete the beat entries neither in ``CELERY_BEAT_SCHEDULE`` nor derived from a schedule.

        django-celery-beat keeps a row for every entry it was ever given: without this, a job taken out of the
        settings (``ENABLE_AUTO_PURGE`` turned off) would go on running.
        """
        stale = PeriodicTask.objects.filter(crux_schedule__isnull=True).exclude(
            name__in=list(self.app.conf.beat_schedule)
        )
        names = sorted(stale.values_list("name", flat=True))
        if names:
            stale.delete()
            logger.info("beat %s removed entries no longer in CELERY_BEAT_SCHEDULE: %s", self.holder, names)
        return names

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        """Send only under a lease renewed recently: a leader paused past its lease (SIGSTOP, a stalled VM) and
        resumed in the middle of a tick must not send what the beat that took over sends."""
        if self._renewed_at is None or time.monotonic() - self._renewed_at > self.lease_seconds * 3 / 4:
            logger.warning("beat %s: the scheduler lease may have lapsed; not sending %s", self.holder, entry.name)
            # Not sent, so not recorded as run: the next tick renews the lease (or stands by) and re-reads from SQL.
            self.leading, self._renewed_at = False, None
            self._dirty.clear()
            return
        super().apply_entry(entry, producer=producer)

    def _take_over(self) -> None:
        """Read every entry back from SQL (the last runs the previous leader wrote) before sending anything."""
        logger.info("beat %s holds the scheduler lease: sending periodic tasks", self.holder)
        self.remove_stale_entries()
        self._standby_logged = False
        self._initial_read = True
        self._heap = None

    def _stand_by(self) -> None:
        try:
            lease = SchedulerLease.objects.filter(name=services.SCHEDULER_LEASE).first()
        except DatabaseError:
            lease = None
        other = f"{lease.holder} (until {lease.expires_at:%H:%M:%S})" if lease else "another beat"
        logger.info("beat %s stands by: %s holds the scheduler lease", self.holder, other)
        self._standby_logged = True
        # What this beat sent but did not write back is dropped: the new leader's last runs are newer.
        self._dirty.clear()

    def should_sync(self) -> bool:
        """Write last runs back at once for entries whose period is at least the lease (a takeover reads them, so it
        does not send them again), and the others every half lease: a beat taking over waits out the lease, by
        which time they are due anyway. A write per sweep (every 0.5 s) would contend with the workers' on SQLite.
        """
        if not self._dirty:
            return False
        if self._last_sync is None or time.monotonic() - self._last_sync >= self.lease_seconds / 2:
            return True
        return any(self._is_long(name) for name in self._dirty)

    def _is_long(self, name: str) -> bool:
        entry = (self._schedule or {}).get(name)
        schedule = getattr(entry, "schedule", None)
        return type(schedule) is not schedules.schedule or float(schedule.seconds) >= self.lease_seconds

    def reserve(self, entry: Any) -> Any:
        """Keep the sent entry's successor in the schedule, as Celery's own scheduler does.

        DatabaseScheduler leaves the old entry there, whose last run is the previous one; when a change to the
        schedule is noticed between two ticks (another beat starting, a takeover), the heap is rebuilt from those
        entries and the entry just sent is sent again.
        """
        new_entry = super().reserve(entry)
        if self._schedule is not None and entry.name in self._schedule:
            self._schedule[entry.name] = new_entry
        return new_entry

    def close(self) -> None:
        super().close()
        if self.leading:
            services.release_scheduler_lease(self.holder)
            self.leading = False

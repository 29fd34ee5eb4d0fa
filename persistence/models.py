"""Restore drills of backups: each one restored into a scratch database, verified and recorded here."""

from __future__ import annotations

from django.db import models


class DrillTrigger(models.TextChoices):
    AFTER_BACKUP = "after_backup", "after a backup"
    COMMAND = "command", "drill_backup command"
    ADMIN = "admin", "admin button"


class BackupDrill(models.Model):
    """One restore drill: which backup, when, how long, and what it found (``problems`` empty when ``ok``)."""

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField()
    duration_seconds = models.FloatField()
    backup_name = models.CharField(max_length=255, db_index=True)
    checksum = models.CharField(max_length=80, blank=True, help_text="The backup file's sha256 when drilled.")
    ok = models.BooleanField()
    trigger = models.CharField(max_length=20, choices=DrillTrigger.choices)
    actor = models.CharField(max_length=150, blank=True)
    problems = models.JSONField(default=list, blank=True)
    counts = models.JSONField(
        default=dict, blank=True, help_text="Per table: rows recorded at backup time and rows restored."
    )

    class Meta:
        ordering = ["-started_at", "-pk"]
        permissions = [("run_backupdrill", "Can run a backup restore drill")]

    def __str__(self) -> str:
        return f"drill of {self.backup_name} at {self.started_at:%Y-%m-%d %H:%M:%S}: {'ok' if self.ok else 'FAILED'}"

"""Shapes of the persistence endpoints: the mirrored status, the recovery answer, the statistics."""

from __future__ import annotations

from rest_framework import serializers

from tasks.api.serializers import TaskSerializer
from tasks.states import TaskState


class TaskStatusSerializer(serializers.Serializer):
    """The Redis mirror document of a task (persistence.mirror.MIRRORED_FIELDS)."""

    id = serializers.UUIDField()
    title = serializers.CharField()
    state = serializers.ChoiceField(choices=TaskState.choices)
    owner_id = serializers.IntegerField(allow_null=True)
    role = serializers.CharField(allow_blank=True)
    provider = serializers.CharField(allow_blank=True)
    progress = serializers.FloatField()
    current_phase = serializers.CharField(allow_blank=True)
    attempt_count = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    last_error = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    deleted_at = serializers.DateTimeField(allow_null=True)
    version = serializers.IntegerField(help_text="Microseconds since the epoch of the last change.")


class RecoverResultSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=["requeued", "remirrored"],
        help_text="`requeued`: an interrupted, failed or cancelled task was queued again; `remirrored`: its Redis "
        "entry was rewritten from SQL.",
    )
    task = TaskSerializer()


class _TaskCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    alive = serializers.IntegerField()
    deleted = serializers.IntegerField()
    by_state = serializers.DictField(child=serializers.IntegerField())
    by_role = serializers.DictField(child=serializers.IntegerField(), help_text='"" counts tasks without a role.')
    by_provider = serializers.DictField(child=serializers.IntegerField())


class _TotalSerializer(serializers.Serializer):
    total = serializers.IntegerField()


class _DatabaseSizeSerializer(serializers.Serializer):
    vendor = serializers.CharField()
    size_bytes = serializers.IntegerField(allow_null=True)
    index_bytes = serializers.IntegerField(allow_null=True, help_text="null when SQLite lacks dbstat.")
    index_share = serializers.FloatField(allow_null=True)


class _MirrorSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    consistency = serializers.FloatField(
        allow_null=True, help_text="Share of the tasks that should be mirrored whose entry matches SQL."
    )
    checked = serializers.IntegerField(required=False)
    matching = serializers.IntegerField(required=False)
    missing = serializers.IntegerField(required=False)
    stale = serializers.IntegerField(required=False)
    orphan = serializers.IntegerField(required=False)
    error = serializers.CharField(required=False)


class _DrillSerializer(serializers.Serializer):
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()
    duration_seconds = serializers.FloatField()
    backup = serializers.CharField(help_text="The backup file's name (in BACKUP_DIR).")
    checksum = serializers.CharField(allow_blank=True)
    ok = serializers.BooleanField()
    trigger = serializers.CharField()
    problems = serializers.ListField(child=serializers.CharField(), help_text="Empty when the drill passed.")


class StatsSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    tasks = _TaskCountsSerializer()
    history = _TotalSerializer()
    outputs = _TotalSerializer()
    deletions_last_hour = serializers.IntegerField()
    database = _DatabaseSizeSerializer()
    mirror = _MirrorSerializer()
    last_backup_at = serializers.DateTimeField(allow_null=True)
    last_drill = _DrillSerializer(
        allow_null=True, help_text="The last restore drill of a backup (restored into a scratch database, verified)."
    )
    last_drill_success_at = serializers.DateTimeField(allow_null=True)
    last_recovery_at = serializers.DateTimeField(allow_null=True)

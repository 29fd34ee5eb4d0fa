"""Shapes of the endpoints composed at the top: health, and where a task is (locate)."""

from __future__ import annotations

from rest_framework import serializers

from tasks.api.fields import BlankAsNullChoiceField
from tasks.states import TaskState


class _HealthCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    latency_ms = serializers.FloatField(required=False, help_text="Staff only.")
    detail = serializers.CharField(required=False, help_text="Staff only: what answered, or the error.")
    workers = serializers.ListField(child=serializers.CharField(), required=False, help_text="Staff only.")


class _HealthChecksSerializer(serializers.Serializer):
    database = _HealthCheckSerializer()
    redis = _HealthCheckSerializer()
    broker = _HealthCheckSerializer()
    worker = _HealthCheckSerializer()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["ok", "degraded", "unavailable"],
        help_text="unavailable (503): the database fails; degraded (200): Redis, the broker or every worker fails, "
        "and tasks are still accepted.",
    )
    failing = serializers.ListField(child=serializers.ChoiceField(choices=["database", "redis", "broker", "worker"]))
    checks = _HealthChecksSerializer()


class _LocationLedgerSerializer(serializers.Serializer):
    purged_at = serializers.DateTimeField()
    policy = serializers.CharField()
    actor = serializers.CharField()
    channel = serializers.CharField()
    state = serializers.CharField()
    title = serializers.CharField()
    owner = serializers.CharField(allow_blank=True)
    archive_file = serializers.CharField()
    archive_checksum = serializers.CharField()
    archive_present = serializers.BooleanField()
    archive_intact = serializers.BooleanField()
    restorable = serializers.BooleanField()
    restored_at = serializers.DateTimeField(allow_null=True)
    restored_by = serializers.CharField(allow_blank=True)
    signature_valid = serializers.BooleanField(help_text="The tombstone's HMAC verifies: not forged or edited.")


class _LocationCheckpointSerializer(serializers.Serializer):
    file = serializers.CharField()
    created_at = serializers.DateTimeField()
    history_count = serializers.IntegerField()
    history_head = serializers.CharField()
    backup = serializers.CharField(allow_blank=True, help_text="The backup this checkpoint was written with, if any.")


class _LocationHistorySerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    event = serializers.CharField()
    state_from = BlankAsNullChoiceField(choices=TaskState.choices, help_text="null for the row that created the task.")
    state_to = serializers.CharField()
    actor = serializers.CharField()
    channel = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)


class LocationSerializer(serializers.Serializer):
    """``locate``'s answer: the verdict first, then what each store holds."""

    task_id = serializers.UUIDField()
    verdict = serializers.CharField(
        help_text="One line: never existed / live / cancelled / soft-deleted / purged / was stored, now missing."
    )
    exists = serializers.BooleanField(help_text="The task row is in SQL (live or soft-deleted).")
    task = serializers.DictField(allow_null=True, help_text="The task's live state as mirrored, from SQL.")
    ledger = _LocationLedgerSerializer(many=True, help_text="Purge-ledger rows, newest first.")
    mirror = serializers.DictField(help_text="The Redis mirror entry: present, consistent with SQL, state.")
    celery_result = serializers.DictField(allow_null=True, help_text="Celery's result record, if any.")
    last_history = _LocationHistorySerializer(many=True, help_text="The last five history rows, newest first.")
    checkpoint = _LocationCheckpointSerializer(
        allow_null=True,
        help_text="Where the newest signed audit checkpoint saw a task that is gone without a valid tombstone.",
    )

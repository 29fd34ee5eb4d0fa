"""Shapes of the endpoints composed at the top: health, and where a task is (locate)."""

from __future__ import annotations

from rest_framework import serializers


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
    status = serializers.ChoiceField(choices=["ok", "degraded"])
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


class _LocationHistorySerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    event = serializers.CharField()
    state_from = serializers.CharField(allow_blank=True)
    state_to = serializers.CharField()
    actor = serializers.CharField()
    channel = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)


class LocationSerializer(serializers.Serializer):
    """``locate``'s answer: the verdict first, then what each store holds."""

    task_id = serializers.UUIDField()
    verdict = serializers.CharField(help_text="One line: never existed / live / cancelled / soft-deleted / purged.")
    exists = serializers.BooleanField(help_text="The task row is in SQL (live or soft-deleted).")
    task = serializers.DictField(allow_null=True, help_text="The task's live state as mirrored, from SQL.")
    ledger = _LocationLedgerSerializer(many=True, help_text="Purge-ledger rows, newest first.")
    mirror = serializers.DictField(help_text="The Redis mirror entry: present, consistent with SQL, state.")
    celery_result = serializers.DictField(allow_null=True, help_text="Celery's result record, if any.")
    last_history = _LocationHistorySerializer(many=True, help_text="The last five history rows, newest first.")

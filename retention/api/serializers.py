"""Shapes of the purge endpoint: its parameters and its report."""

from __future__ import annotations

from rest_framework import serializers

from tasks.api.fields import QueryBooleanField, QueryIntegerField


class PurgeParamsSerializer(serializers.Serializer):
    """Query parameters of ``POST /api/purge``: a dry run unless ``confirm=true``."""

    confirm = QueryBooleanField(required=False, default=False, help_text="`true` purges; otherwise a dry run.")
    limit = QueryIntegerField(
        required=False,
        min_value=1,
        help_text="Tasks in this run (default and maximum MAX_TASKS_PER_PURGE; more answers 400).",
    )


class _PurgeItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    state = serializers.CharField()
    deleted = serializers.BooleanField(help_text="In the trash (soft-deleted).")
    policy = serializers.CharField(help_text="The policy that lets it go, e.g. `completed-7d`.")


class PurgeReportSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    limit = serializers.IntegerField()
    selected = _PurgeItemSerializer(many=True, help_text="Tasks the policies let go (purged unless a dry run).")
    purged = serializers.IntegerField()
    skipped = serializers.IntegerField(help_text="Selected but no longer eligible when the purge ran.")
    archive_file = serializers.CharField(allow_blank=True)
    archive_checksum = serializers.CharField(allow_blank=True)

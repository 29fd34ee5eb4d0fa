"""Shapes of the API: read representations, and strict write forms that reject what clients may not set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from tasks.models import OutputType, Task, TaskHistory, TaskOutput
from tasks.registry import registered_names
from tasks.services import EDITABLE_FIELDS
from tasks.states import TaskState

REASON_MAX_LENGTH = 500
_TASK_FIELD_NAMES = frozenset(f.name for f in Task._meta.get_fields()) | {"payload", "owner_id", "is_deleted"}


class StrictCharField(serializers.CharField):
    """JSON strings only, stored as sent: a number is not turned into text, whitespace is not trimmed."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON ``true`` or ``false`` only (not "yes", 1 or "true")."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictIntegerField(serializers.IntegerField):
    """JSON integers only (not "5", 5.0 or true)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class QueryBooleanField(serializers.BooleanField):
    """``true`` or ``false`` exactly, as written in a query string."""

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):  # the parameter was left out: DRF passes the field's default
            return data
        if data not in ("true", "false"):
            self.fail("invalid")
        return data == "true"


def refuse_null_characters(value: Any) -> None:
    """PostgreSQL stores no NUL in text or jsonb: refuse it anywhere in a JSON document (400, not 500)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError("Null characters are not allowed.")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            refuse_null_characters(key)
            refuse_null_characters(item)
    elif isinstance(value, list):
        for item in value:
            refuse_null_characters(item)


def json_object(**kwargs: Any) -> serializers.DictField:
    """A JSON object of any content, without NUL characters."""
    return serializers.DictField(validators=[refuse_null_characters], **kwargs)


_STRICT = {
    serializers.CharField: StrictCharField,
    serializers.BooleanField: StrictBooleanField,
    serializers.IntegerField: StrictIntegerField,
}


def handler_field(**kwargs: Any) -> serializers.ChoiceField:
    """The registered handlers, read from settings when the serializer is built (schema and validation)."""
    return serializers.ChoiceField(choices=registered_names(), help_text="A handler named in TASK_HANDLERS.", **kwargs)


_SHARED_FIELDS: dict[type, BindingDict] = {}


@receiver(setting_changed, dispatch_uid="tasks.api.serializers.shared_fields")
def _forget_shared_fields(**kwargs: Any) -> None:
    """Fields read settings when built (TASK_HANDLERS' choices): rebuild them when a setting changes."""
    _SHARED_FIELDS.clear()


class SharedFieldsMixin:
    """Build a serializer's fields once per class and share them between its instances.

    ModelSerializer introspects the model again for every instance: about a
    millisecond for Task, more than validating and rendering a task together.
    The fields of these serializers keep no per-request state and never read the
    serializer's context or instance, so one set, bound to a bare prototype, serves
    every instance (DRF fields that need the context, such as hyperlinks or
    ``CurrentUserDefault``, must not be used on a serializer with this mixin).
    """

    @property
    def fields(self) -> BindingDict:
        cls = type(self)
        shared = _SHARED_FIELDS.get(cls)
        if shared is None:
            prototype = cls()
            shared = _SHARED_FIELDS[cls] = BindingDict(prototype)
            for name, field in prototype.get_fields().items():
                shared[name] = field
        return shared


class RejectUnknownFieldsMixin:
    """Answer 400 for fields a client may not write, instead of silently ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            refused = sorted(str(name) for name in set(data) - writable)
            if refused:
                raise serializers.ValidationError(
                    {
                        name: [
                            "This field is read-only: the server sets it."
                            if name in self.fields or name in _TASK_FIELD_NAMES
                            else "Unknown field."
                        ]
                        for name in refused
                    }
                )
        return super().to_internal_value(data)


class StrictModelSerializer(SharedFieldsMixin, RejectUnknownFieldsMixin, serializers.ModelSerializer):
    """Writes take JSON types as the schema states them, and refuse fields that are not writable."""

    serializer_field_mapping = {
        model_field: _STRICT.get(field, field)
        for model_field, field in serializers.ModelSerializer.serializer_field_mapping.items()
    }


class TaskSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    """A task as clients see it; state, owner and audit fields are never written through it."""

    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    deleted_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    payload = serializers.JSONField(source="request_payload", read_only=True)
    is_deleted = serializers.BooleanField(read_only=True)

    class Meta:
        model = Task
        fields = [
            "id",
            "title",
            "description",
            "state",
            "role",
            "handler",
            "owner",
            "provider",
            "model",
            "branch",
            "worktree_path",
            "base_branch",
            "commit_hash",
            "target_dir",
            "full_access",
            "provider_override",
            "repository_url",
            "acceptance_criteria",
            "metadata",
            "payload",
            "progress",
            "current_phase",
            "result",
            "partial_results",
            "last_error",
            "error_count",
            "attempt_count",
            "max_attempts",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
            "is_deleted",
            "deleted_at",
            "deleted_by",
            "delete_reason",
            "history_count",
        ]
        read_only_fields = fields


class TaskSubmitSerializer(StrictModelSerializer):
    """What a client may set when submitting: tasks.services.CREATE_FIELDS (``payload`` is request_payload)."""

    payload = json_object(
        source="request_payload", required=False, help_text="Input of the handler; credentials are redacted."
    )
    metadata = json_object(required=False, help_text="Free-form; credentials are redacted.")
    acceptance_criteria = json_object(required=False)

    class Meta:
        model = Task
        fields = [*sorted(EDITABLE_FIELDS), "payload"]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["handler"] = handler_field(required=False, default=Task._meta.get_field("handler").default)
        return fields


class TaskOutputSerializer(StrictModelSerializer):
    output_type = serializers.ChoiceField(choices=OutputType.choices)

    class Meta:
        model = TaskOutput
        fields = [
            "id",
            "output_type",
            "content",
            "created_at",
            "file_path",
            "file_size",
            "mime_type",
            "commit_hash",
            "branch",
        ]
        read_only_fields = ["id", "created_at"]


class TaskHistorySerializer(SharedFieldsMixin, serializers.ModelSerializer):
    class Meta:
        model = TaskHistory
        fields = [
            "seq",
            "event",
            "state_from",
            "state_to",
            "actor",
            "channel",
            "reason",
            "error_message",
            "details",
            "created_at",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


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


class ReasonSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = StrictCharField(
        max_length=REASON_MAX_LENGTH, required=False, help_text="Why; recorded in the task's history."
    )


class ConfirmSerializer(serializers.Serializer):
    """Query parameters of destructive requests: an explicit ``confirm=true``."""

    confirm = QueryBooleanField(
        required=False, default=False, help_text="Must be `true`: the request changes the task for good."
    )

    def validate_confirm(self, value: bool) -> bool:
        if not value:
            raise serializers.ValidationError(self.context.get("confirm_message", "Repeat with confirm=true."))
        return value


class DeleteSerializer(ConfirmSerializer):
    reason = serializers.CharField(
        max_length=REASON_MAX_LENGTH,
        help_text="Why the task is deleted; recorded with who and when.",
        error_messages={"required": "Say why the task is deleted (reason=...); it is recorded in its history."},
    )


class CancelSerializer(ConfirmSerializer):
    reason = serializers.CharField(max_length=REASON_MAX_LENGTH, required=False, help_text="Why; recorded in history.")


class RecoverResultSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=["requeued", "remirrored"],
        help_text="`requeued`: an interrupted or failed task was queued again; `remirrored`: its Redis entry "
        "was rewritten from SQL.",
    )
    task = TaskSerializer()


class LegacySolveSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """The body of the legacy ``POST /api/v1/solve``."""

    request = json_object(help_text="The problem to solve; becomes the task's payload (redacted).")
    mode = serializers.ChoiceField(choices=["basic", "enhanced"], default="basic")
    title = StrictCharField(max_length=200, default="solve")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["handler"] = handler_field(default="agent_demo")


class LegacyJobSerializer(serializers.Serializer):
    """A task in the shape of the legacy Redis ``job:{id}`` hash (seed 001)."""

    job_id = serializers.UUIDField(source="id")
    status = serializers.ChoiceField(source="state", choices=TaskState.choices)
    mode = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    progress = serializers.FloatField()
    current_phase = serializers.CharField(allow_blank=True)
    result = serializers.JSONField(allow_null=True)
    partial_results = serializers.JSONField(allow_null=True)
    error = serializers.CharField(source="last_error", allow_blank=True)
    request = serializers.JSONField(source="request_payload")

    def get_mode(self, task: Task) -> str:
        return str(task.metadata.get("mode", "basic")) if isinstance(task.metadata, dict) else "basic"


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


class StatsSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    tasks = _TaskCountsSerializer()
    history = _TotalSerializer()
    outputs = _TotalSerializer()
    deletions_last_hour = serializers.IntegerField()
    database = _DatabaseSizeSerializer()
    mirror = _MirrorSerializer()
    last_backup_at = serializers.DateTimeField(allow_null=True)
    last_recovery_at = serializers.DateTimeField(allow_null=True)


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


class PurgeParamsSerializer(serializers.Serializer):
    """Query parameters of ``POST /api/purge``: a dry run unless ``confirm=true``."""

    confirm = QueryBooleanField(required=False, default=False, help_text="`true` purges; otherwise a dry run.")
    limit = serializers.IntegerField(
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


class _TraceLedgerSerializer(serializers.Serializer):
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


class _TraceHistorySerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    event = serializers.CharField()
    state_from = serializers.CharField(allow_blank=True)
    state_to = serializers.CharField()
    actor = serializers.CharField()
    channel = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)


class TraceSerializer(serializers.Serializer):
    """``locate``'s answer: the verdict first, then what each store holds."""

    task_id = serializers.UUIDField()
    verdict = serializers.CharField(help_text="One line: never existed / live / cancelled / soft-deleted / purged.")
    exists = serializers.BooleanField(help_text="The task row is in SQL (live or soft-deleted).")
    task = serializers.DictField(allow_null=True, help_text="The task's live state as mirrored, from SQL.")
    ledger = _TraceLedgerSerializer(many=True, help_text="Purge-ledger rows, newest first.")
    mirror = serializers.DictField(help_text="The Redis mirror entry: present, consistent with SQL, state.")
    celery_result = serializers.DictField(allow_null=True, help_text="Celery's result record, if any.")
    last_history = _TraceHistorySerializer(many=True, help_text="The last five history rows, newest first.")

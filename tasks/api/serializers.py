"""Shapes of the task endpoints: read representations, and strict write forms that reject what clients may not set."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tasks.api.fields import (
    REASON_MAX_LENGTH,
    BlankAsNullChoiceField,
    RejectUnknownFieldsMixin,
    SharedFieldsMixin,
    StrictCharField,
    StrictDateTimeField,
    StrictModelSerializer,
    UsernameField,
    handler_field,
    json_object,
)
from tasks.models import OutputType, Task, TaskHistory, TaskOutput
from tasks.selectors import previous_link
from tasks.services import EDITABLE_FIELDS, IDEMPOTENCY_KEY_MAX_LENGTH, task_queues
from tasks.states import TaskState


class TaskSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    """A task as clients see it; state, owner and audit fields are never written through it."""

    owner = UsernameField("owner", help_text="Username of the task's owner.")
    deleted_by = UsernameField("deleted_by", help_text="Username of whoever soft-deleted the task.")
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
            "retry_backoff",
            "queue",
            "priority",
            "soft_time_limit",
            "time_limit",
            "celery_task_id",
            "run_after",
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
        source="request_payload",
        required=False,
        help_text="Input of the handler, checked against its declaration (GET /api/handlers); credentials are "
        "redacted.",
    )
    metadata = json_object(required=False, help_text="Free-form; credentials are redacted.")
    acceptance_criteria = json_object(required=False)
    run_at = StrictDateTimeField(
        required=False, help_text="Start no earlier than this (RFC 3339 with a time zone); a past time means now."
    )

    class Meta:
        model = Task
        fields = [*sorted(EDITABLE_FIELDS), "queue", "priority", "payload", "run_at"]
        extra_kwargs = {
            "priority": {"help_text": "0 (last) to 9 (first) within its queue; absent: the handler's, else 5."},
        }

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["handler"] = handler_field(required=False, default=Task._meta.get_field("handler").default)
        queues = task_queues()
        fields["queue"] = serializers.ChoiceField(
            choices=queues,
            required=False,
            allow_blank=True,
            help_text="Task queue to run on: the default queue, a handler's or one of TASK_QUEUES. Absent: the "
            "handler's queue, else the default; blank: the default queue.",
            error_messages={
                "invalid_choice": f'Unknown queue "{{input}}"; known: {", ".join(queues)} (or blank: the default '
                "queue). The housekeeping queue is Crux's own."
            },
        )
        return fields


class BatchItemSerializer(TaskSubmitSerializer):
    """One task of a batch submit: what ``POST /api/tasks/`` takes, and its own optional idempotency key."""

    idempotency_key = StrictCharField(
        required=False,
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        validators=[RegexValidator(r"^[ -~]+\Z", "Use printable ASCII characters, e.g. a UUID.")],
        help_text="Optional, as the Idempotency-Key header of a single submit: an item whose key an earlier request "
        "used with the same fields is that task (created false), never a second one.",
    )

    class Meta(TaskSubmitSerializer.Meta):
        fields = [*TaskSubmitSerializer.Meta.fields, "idempotency_key"]


class BatchListField(serializers.ListField):
    """A non-empty list of at most TASK_BATCH_MAX items, counted before any item is validated."""

    def to_internal_value(self, data: Any) -> list[Any]:
        limit = settings.TASK_BATCH_MAX
        if isinstance(data, list) and len(data) > limit:
            raise serializers.ValidationError(
                f"Send at most {limit} tasks (TASK_BATCH_MAX); this batch has {len(data)}."
            )
        return super().to_internal_value(data)


class TaskBatchSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """``POST /api/tasks/batch``: the tasks to submit together."""

    tasks = BatchListField(
        child=BatchItemSerializer(),
        min_length=1,
        help_text="Up to TASK_BATCH_MAX tasks (default 1000). An error names the item's index and field: "
        '{"tasks": {"3": {"payload": {"seconds": ["A valid number is required."]}}}}; nothing is written.',
    )


class BatchResultSerializer(serializers.Serializer):
    """One submitted task of a batch, in the order of the request."""

    id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=TaskState.choices)
    created = serializers.BooleanField(help_text="False: the item's idempotency key replayed an earlier task.")
    url = serializers.URLField()


class TaskBatchResultSerializer(serializers.Serializer):
    tasks = BatchResultSerializer(many=True)


class HandlerSerializer(serializers.Serializer):
    """A registered handler and the JSON Schema of the payload it accepts (``GET /api/handlers``)."""

    name = serializers.CharField(help_text="The value of a task's ``handler``.")
    description = serializers.CharField(help_text="What the handler does (its docstring's first line).")
    payload_schema = serializers.DictField(
        help_text="JSON Schema of ``payload``; a submission that does not fit answers 400 naming the field."
    )


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
    state_from = BlankAsNullChoiceField(
        choices=TaskState.choices, read_only=True, help_text="null for the row that created the task."
    )
    prev_hash = serializers.SerializerMethodField(
        help_text="The hash this row is chained to: the previous row's (64 hex characters; derived, not stored)."
    )
    hash = serializers.CharField(read_only=True, help_text="This row's HMAC-SHA256 link (64 hex characters).")

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

    @extend_schema_field(OpenApiTypes.STR)
    def get_prev_hash(self, row: TaskHistory) -> str:
        return previous_link(row)


class DeleteSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """The JSON body of a soft delete: why, in the body (a URL is logged; ``confirm=true`` stays in the query)."""

    reason = StrictCharField(
        max_length=REASON_MAX_LENGTH,
        help_text="Why the task is deleted; recorded with who and when.",
        error_messages={
            "required": 'Say why the task is deleted: a "reason" in the JSON body; it is recorded in its history.'
        },
    )


class LegacySolveSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """The body of the legacy ``POST /api/v1/solve``."""

    request = json_object(help_text="The problem to solve; becomes the task's payload (redacted).")
    mode = serializers.ChoiceField(choices=["basic", "enhanced"], default="basic")
    title = StrictCharField(max_length=200, default="solve")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["handler"] = handler_field(default="agent_demo")


class LegacyJobSerializer(serializers.Serializer):
    """A task in the shape of the legacy Redis ``job:{id}`` hash."""

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

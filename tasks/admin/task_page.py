"""The parts of a task's admin page: its latest history and outputs, its metrics, and the edit form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Field, QuerySet
from django.utils.html import format_html
from django.utils.text import Truncator

from tasks import services
from tasks.admin.base import (
    ReadOnlyInline,
    transition_html,
)
from tasks.admin.forms import HandlerField, PayloadField, PayloadFormMixin
from tasks.exceptions import InvalidTaskData
from tasks.models import (
    Task,
    TaskHistory,
    TaskMetrics,
    TaskOutput,
)
from tasks.services.base import HANDLER_DEFAULT_FIELDS
from tasks.states import TaskState


def collapsed_if_default(obj: Task, names: tuple[str, ...]) -> tuple[str, ...]:
    """Collapse a group of the task page whose fields all hold their defaults (nothing to read there)."""
    for name in names:
        field = Task._meta.get_field(name)
        assert isinstance(field, Field)  # the groups name the task's own columns
        if getattr(obj, field.attname) != field.get_default():
            return ()
    return ("collapse",)


INLINE_ROWS = 100


class LatestHistoryFormSet(forms.BaseInlineFormSet):
    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        head = getattr(self.instance, "history_count", 0) or 0
        return queryset.filter(seq__gt=head - INLINE_ROWS) if head > INLINE_ROWS else queryset


class HistoryInline(ReadOnlyInline):
    model = TaskHistory
    formset = LatestHistoryFormSet
    verbose_name_plural = f"history (newest first; the latest {INLINE_ROWS} rows, see the timeline for all)"
    fields = ("seq", "created_at", "event", "transition", "actor", "channel", "reason")
    readonly_fields = fields
    ordering = ("-seq",)

    @admin.display(description="state")
    def transition(self, obj: TaskHistory) -> str:
        return transition_html(obj)


class LatestOutputsFormSet(forms.BaseInlineFormSet):
    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        latest = TaskOutput.objects.filter(task=self.instance).order_by("-created_at", "-id").values("id")
        return queryset.filter(id__in=latest[:INLINE_ROWS])


class OutputInline(ReadOnlyInline):
    model = TaskOutput
    formset = LatestOutputsFormSet
    verbose_name_plural = f"outputs (the latest {INLINE_ROWS})"
    fields = ("created_at", "output_type", "preview", "file_path", "file_size", "commit_hash", "branch")
    readonly_fields = fields
    ordering = ("-created_at", "-id")

    @admin.display(description="content")
    def preview(self, obj: TaskOutput) -> str:
        return format_html("<pre class='crux-pre'>{}</pre>", Truncator(obj.content).chars(2000))


class MetricsInline(ReadOnlyInline):
    model = TaskMetrics
    fields = (*services.METRIC_FIELDS, "updated_at")
    readonly_fields = fields


class TaskAdminForm(forms.ModelForm):
    change_reason = forms.CharField(
        max_length=500, help_text="Why you are making this change; recorded in the task's history."
    )

    class Meta:
        model = Task
        fields = sorted(services.EDITABLE_FIELDS)


class TaskSubmitForm(PayloadFormMixin, forms.ModelForm):
    """The add form: a task submitted as the API submits it (``services.submit_task``), so it is queued and runs.

    Checked as the service checks it (the handler's payload declaration, its defaults, the known queues) before
    anything is written; each refusal is a message on its field. Blank queue, priority and max attempts take the
    handler's defaults; blank limits and backoff, the handler's (else the settings') at run time.
    """

    handler = HandlerField()
    payload = PayloadField()
    run_at = forms.DateTimeField(
        required=False,
        help_text="Start no earlier than this (e.g. 2030-01-01 09:00:00, in the server's time zone, or ISO 8601 "
        "with an offset). Blank or past: now.",
    )
    priority = forms.IntegerField(
        required=False, min_value=0, max_value=9, help_text="0 (last) to 9 (first) within its queue (blank: handler's)."
    )
    max_attempts = forms.IntegerField(
        required=False, min_value=1, max_value=100, help_text="Attempts before it fails (blank: handler's)."
    )
    change_reason = forms.CharField(
        required=False, max_length=500, help_text="Why you submit it; recorded in the task's history."
    )

    class Meta:
        model = Task
        fields = sorted(services.EDITABLE_FIELDS | {"queue", "priority", "owner"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "owner" in self.fields:
            self.fields["owner"].required = False
            self.fields["owner"].help_text = "Whose task it is (blank: you)."

    def submission(self) -> dict[str, object]:
        """The fields ``services.submit_task`` takes; blanks left out take the handler's defaults."""
        data = self.cleaned_data
        fields = {name: data[name] for name in services.CREATE_FIELDS if name in data}
        fields["request_payload"] = data.get("payload", {})
        for name in HANDLER_DEFAULT_FIELDS:
            if fields.get(name) in (None, ""):
                fields.pop(name, None)
        return fields

    def _post_clean(self) -> None:
        """The service's checks in place of the model form's: the task it would submit, nothing written."""
        if self.errors:
            return
        try:
            self.instance = services.checked_submission(
                self.cleaned_data.get("owner"), self.submission(), state=TaskState.QUEUED
            )
        except InvalidTaskData as exc:
            self.add_service_errors(exc, aliases={"request_payload": "payload"})

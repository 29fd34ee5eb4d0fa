"""The parts of a task's admin page: its latest history and outputs, its metrics, and the edit form."""

from __future__ import annotations

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
from tasks.models import (
    Task,
    TaskHistory,
    TaskMetrics,
    TaskOutput,
)


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

"""The parts of a task's admin page: the live panel (state, progress, output tail), its latest history, its
metrics, and the edit form."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.core.paginator import Page, Paginator
from django.db.models import Field, QuerySet
from django.utils import timezone

from tasks import services
from tasks.admin.base import (
    ReadOnlyInline,
    short_datetime,
    transition_html,
)
from tasks.admin.forms import HandlerField, PayloadField, PayloadFormMixin
from tasks.admin.timeline import format_duration
from tasks.exceptions import InvalidTaskData
from tasks.models import (
    Task,
    TaskHistory,
    TaskOutput,
)
from tasks.selectors import OutputTail, output_tail, task_outputs
from tasks.services.base import HANDLER_DEFAULT_FIELDS
from tasks.states import TaskState, is_terminal

# The live panel: refreshed in place (htmx) this often while the task is not finished; its tail shows the
# latest lines, each cut at a length a page can hold (the pages and the download have every line whole).
LIVE_REFRESH = "1500ms"
TAIL_LINES = 100
TAIL_LINE_CHARS = 2000
OUTPUT_PAGE_SIZE = 200


def collapsed_if_default(obj: Task, names: tuple[str, ...]) -> tuple[str, ...]:
    """Collapse a group of the task page whose fields all hold their defaults (nothing to read there)."""
    for name in names:
        field = Task._meta.get_field(name)
        assert isinstance(field, Field)  # the groups name the task's own columns
        if getattr(obj, field.attname) != field.get_default():
            return ()
    return ("collapse",)


def duration_label(task: Task, now: datetime | None = None) -> str:
    """How long the task ran: start to end, or to now while it runs (marked "…"); "-" before it starts."""
    if task.started_at is None:
        return "-"
    end = task.completed_at or ((now or timezone.now()) if task.state == TaskState.RUNNING else None)
    if end is None:
        return "-"
    return format_duration(end - task.started_at) + ("…" if task.completed_at is None else "")


@dataclass(frozen=True)
class LivePanel:
    """What the live panel shows of a task: state, progress and phase, attempt, timings, the output tail."""

    task: Task
    tail: OutputTail
    now: datetime

    @classmethod
    def of(cls, task: Task) -> LivePanel:
        return cls(task=task, tail=output_tail(task.pk, TAIL_LINES), now=timezone.now())

    @property
    def polling(self) -> bool:
        """Refresh until the task finishes; the last refresh drops the trigger, so polling stops."""
        return not is_terminal(self.task.state)

    @property
    def refresh(self) -> str:
        return LIVE_REFRESH

    @property
    def line_chars(self) -> int:
        return TAIL_LINE_CHARS

    @property
    def percent(self) -> str:
        """The progress (a fraction, 0..1) as a percentage with one decimal: "41.7"."""
        return f"{min(max(self.task.progress or 0.0, 0.0), 1.0) * 100:.1f}"

    @property
    def duration(self) -> str:
        return duration_label(self.task, self.now)

    @property
    def heartbeat_age(self) -> str:
        """Time since the running attempt's last heartbeat ("" unless it runs)."""
        if self.task.state != TaskState.RUNNING or self.task.heartbeat_at is None:
            return ""
        return format_duration(self.now - self.task.heartbeat_at)

    @property
    def earlier_lines(self) -> int:
        return self.tail.total - len(self.tail.lines)

    @property
    def last_page(self) -> int:
        return max(1, -(-self.tail.total // OUTPUT_PAGE_SIZE))


def output_page(task: Task, number: Any) -> Page:
    """A page of the task's outputs, oldest first; a malformed or out-of-range number gives the nearest page."""
    return Paginator(task_outputs(task.pk), OUTPUT_PAGE_SIZE).get_page(number)


def output_text(outputs: Iterable[TaskOutput], batch: int = 1000) -> Iterator[str]:
    """Outputs as lines of a text log (time, type, file of an artifact, content as stored: redacted), yielded
    ``batch`` lines at a time so that a long log streams in a few large writes."""
    lines = []
    for output in outputs:
        file = f" ({output.file_path})" if output.file_path else ""
        lines.append(f"{short_datetime(output.created_at)} [{output.output_type}]{file} {output.content}\n")
        if len(lines) == batch:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


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

"""The task admin's confirmation pages: every action lists the tasks it changes, asks for a reason, then acts.

A mixin of ``TaskAdmin``: the buttons of a task page, the confirmation view
(also reached from changelist actions), and the report of what was done. A
confirmed action applies to all the listed tasks or to none: the page says
beforehand when it would be refused (the deletion breaker), and a refusal when
confirmed (checked again) shows the page again with the reason.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from tasks.admin.actions import (
    ACTIONS,
    MAX_TASKS_PER_ACTION,
    ActionSpec,
    ConfirmActionForm,
    parse_ids,
    perform,
    refusal_beforehand,
)
from tasks.audit import signed_in
from tasks.models import Task
from tasks.services import BulkRefused


class ConfirmedActionsMixin(admin.ModelAdmin):
    """Actions of ``tasks.admin.actions.ACTIONS``: each needs its permission and a confirmation with a reason."""

    def has_action_permission(self, request: HttpRequest, spec: ActionSpec) -> bool:
        return request.user.is_active and request.user.is_staff and request.user.has_perm(spec.perm)

    def has_soft_delete_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["soft_delete"])

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["restore"])

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["requeue"])

    def has_queue_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["queue"])

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return self.has_action_permission(request, ACTIONS["cancel"])

    def available_actions(self, request: HttpRequest, obj: Task, *, next_url: str) -> list[dict[str, Any]]:
        """The action buttons of a task page: those the user may use and that apply to this task."""
        buttons = []
        for spec in ACTIONS.values():
            if self.has_action_permission(request, spec) and spec.skip_reason(obj) is None:
                query = urlencode({"ids": str(obj.pk), "next": next_url})
                url = reverse("admin:tasks_task_confirm", args=[spec.name]) + "?" + query
                buttons.append({"url": url, "label": spec.verb.capitalize(), "danger": spec.danger})
        return buttons

    def confirm_view(
        self,
        request: HttpRequest,
        action: str,
        *,
        ids: list[Any] | None = None,
        next_url: str | None = None,
    ) -> HttpResponse:
        """GET (or a changelist action): the confirmation page. POST with ``confirm=yes``: do it."""
        spec = ACTIONS.get(action)
        if spec is None:
            raise Http404(f"no action {action!r}")
        if not self.has_action_permission(request, spec):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        if ids is None:
            ids, invalid = parse_ids(data.getlist("ids"))
        else:
            invalid = []
        next_url = self._safe_next(request, next_url or data.get("next"))
        if not ids:
            self.message_user(request, "No tasks were selected.", messages.WARNING)
            return HttpResponseRedirect(next_url)
        if len(ids) > MAX_TASKS_PER_ACTION:
            self.message_user(
                request,
                f"At most {MAX_TASKS_PER_ACTION} tasks per action: narrow the selection with a filter.",
                messages.ERROR,
            )
            return HttpResponseRedirect(next_url)

        form = ConfirmActionForm(request.POST if "confirm" in request.POST else None)
        if request.POST.get("confirm") == "yes" and form.is_valid():
            reason = form.cleaned_data["reason"]
            try:
                done = perform(spec, ids, user=signed_in(request.user), reason=reason)
            except BulkRefused as exc:
                self.message_user(request, f"Nothing was changed: {exc}", messages.ERROR)
            else:
                self._report(request, spec, done, reason)
                return HttpResponseRedirect(next_url)

        found = Task.objects.select_related("owner", "deleted_by").in_bulk(ids)
        rows, skipped = [], []
        for pk in ids:
            task = found.get(pk)
            if task is None:
                invalid.append(str(pk))
            elif (why := spec.skip_reason(task)) is not None:
                skipped.append({"task": task, "why": why})
            else:
                rows.append({"task": task, "note": spec.note(task)})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": spec.title,
            "spec": spec,
            "refusal": refusal_beforehand(spec, len(rows), user=signed_in(request.user)),
            "rows": rows,
            "skipped": skipped,
            "invalid": invalid,
            "form": form,
            "next_url": next_url,
            "action_url": reverse("admin:tasks_task_confirm", args=[spec.name]),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/tasks/task/confirm_action.html", context)

    def _safe_next(self, request: HttpRequest, next_url: str | None) -> str:
        if next_url and url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return next_url
        return reverse("admin:tasks_task_changelist")

    def _report(self, request: HttpRequest, spec: ActionSpec, done: list[Task], reason: str) -> None:
        for task in done:
            self.log_change(request, task, f"{spec.past.capitalize()} through the admin: {reason}")
        ids = ", ".join(str(t.pk)[:8] for t in done[:20]) + ("…" if len(done) > 20 else "")
        count = len(done)
        self.message_user(
            request, f"{spec.past.capitalize()} {count} task{'s' if count != 1 else ''}: {ids}.", messages.SUCCESS
        )


def admin_action(spec: ActionSpec) -> Any:
    """The changelist action of ``spec``: it opens the confirmation page for the selected tasks."""

    def action(modeladmin: ConfirmedActionsMixin, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        ids = list(queryset.order_by().values_list("pk", flat=True)[: MAX_TASKS_PER_ACTION + 1])
        return modeladmin.confirm_view(request, spec.name, ids=ids, next_url=request.get_full_path())

    action.__name__ = spec.admin_action_name
    return admin.action(description=f"{spec.title}…", permissions=[spec.name])(action)

"""DRF permission classes over the rules of ``tasks.selectors.visibility`` (who sees and acts on which task).

Deleting, restoring and recovering need their model permission even on one's
own task; cancelling and adding outputs are open to the owner and, on others'
tasks, to holders of ``tasks.cancel_task`` / ``tasks.add_taskoutput``. Which
tasks a user sees at all is the selectors' business: another user's task
answers 404 before any of these run.
"""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from tasks import selectors
from tasks.models import Task


class HasModelPermission(BasePermission):
    """The user holds ``perm`` (a superuser holds every permission)."""

    perm = ""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm(self.perm))


class CanSoftDelete(HasModelPermission):
    perm = "tasks.soft_delete_task"
    message = "Deleting a task needs the permission tasks.soft_delete_task."


class CanRestore(HasModelPermission):
    perm = "tasks.restore_task"
    message = "Restoring a task needs the permission tasks.restore_task."


class CanRecover(HasModelPermission):
    perm = "tasks.recover_task"
    message = "Recovering a task needs the permission tasks.recover_task."


class OwnerOrHasPermission(BasePermission):
    """Changing a task: its owner, or a holder of ``perm`` (reads follow ``tasks.selectors.visible_tasks``)."""

    perm = ""

    def has_object_permission(self, request: Request, view: Any, obj: Task) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return selectors.may_change(request.user, obj, perm=self.perm)


class OwnerOrCanCancel(OwnerOrHasPermission):
    perm = "tasks.cancel_task"
    message = "Cancelling another user's task needs the permission tasks.cancel_task."


class OwnerOrCanAddOutput(OwnerOrHasPermission):
    perm = "tasks.add_taskoutput"
    message = "Adding an output to another user's task needs the permission tasks.add_taskoutput."


class IsStaffOrMetricsToken(BasePermission):
    """Staff (token or session), or a scraper presenting ``Authorization: Bearer <METRICS_TOKEN>``."""

    message = "Metrics are for staff, or for a scraper with the METRICS_TOKEN bearer token."

    def has_permission(self, request: Request, view: Any) -> bool:
        token = settings.METRICS_TOKEN
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
            return True
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)

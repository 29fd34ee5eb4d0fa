"""Mirroring only: after a change commits, refresh or drop its copy in Redis. Nothing here decides anything.

- A task saved: its entry is refreshed after commit (``mirror.refresh``); tasks created together (a batch
  submit, ``tasks.hooks.tasks_created``): their entries in one round trip.
- A task's live progress written (``tasks.hooks.progress_reported``): its entry is refreshed now.
- A task removed by a purge: its entry is dropped after commit.
- An API token deleted, or its user saved: the cached token identities are dropped
  (``tasks.api.authentication``), so a deactivated user is not served from the cache.

``connect()`` is called from ``PersistenceConfig.ready()``.
"""

from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from rest_framework.authtoken.models import Token

from persistence import mirror
from tasks import hooks
from tasks.api.authentication import forget_tokens
from tasks.models import Task


def refresh_after_commit(sender: type[Task], instance: Task, using: str, **kwargs: Any) -> None:
    transaction.on_commit(partial(mirror.refresh, mirror.snapshot_of(instance)), using=using)


def refresh_created_after_commit(sender: type[Task], tasks: list[Task], using: str, **kwargs: Any) -> None:
    docs = [mirror.snapshot_of(task) for task in tasks]
    transaction.on_commit(partial(mirror.refresh_all, docs), using=using)


def refresh_progress(sender: type[Task], task_id: Any, **kwargs: Any) -> None:
    values = Task.objects.filter(pk=task_id).values(*mirror.MIRRORED_FIELDS).first()
    if values is not None:
        mirror.refresh(mirror.snapshot(values))


def forget_after_commit(sender: type[Task], instance: Task, using: str, **kwargs: Any) -> None:
    transaction.on_commit(partial(mirror.forget, instance.pk), using=using)


def forget_deleted_token(sender: type[Token], instance: Token, using: str, **kwargs: Any) -> None:
    transaction.on_commit(partial(forget_tokens, [instance.key]), using=using)


def forget_tokens_of_saved_user(sender: type[Any], instance: Any, created: bool, using: str, **kwargs: Any) -> None:
    if created:
        return
    keys = list(Token.objects.using(using).filter(user_id=instance.pk).values_list("key", flat=True))
    if keys:
        transaction.on_commit(partial(forget_tokens, keys), using=using)


def connect() -> None:
    post_save.connect(refresh_after_commit, sender=Task, dispatch_uid="persistence.mirror.refresh")
    hooks.tasks_created.connect(refresh_created_after_commit, sender=Task, dispatch_uid="persistence.mirror.created")
    hooks.progress_reported.connect(refresh_progress, sender=Task, dispatch_uid="persistence.mirror.progress")
    post_delete.connect(forget_after_commit, sender=Task, dispatch_uid="persistence.mirror.forget")
    post_delete.connect(forget_deleted_token, sender=Token, dispatch_uid="persistence.tokens.forget_deleted")
    post_save.connect(
        forget_tokens_of_saved_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="persistence.tokens.forget_user"
    )

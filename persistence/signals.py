"""Mirroring only: after a task change commits, refresh its Redis entry."""

from functools import partial
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from persistence import mirror
from tasks.models import Task


@receiver(post_save, sender=Task, dispatch_uid="persistence.mirror.on_commit")
def mirror_after_commit(sender: type[Task], instance: Task, using: str, **kwargs: Any) -> None:
    transaction.on_commit(partial(mirror.publish, mirror.snapshot_of(instance)), using=using)


@receiver(post_delete, sender=Task, dispatch_uid="persistence.mirror.forget_on_commit")
def forget_after_commit(sender: type[Task], instance: Task, using: str, **kwargs: Any) -> None:
    transaction.on_commit(partial(mirror.forget, instance.pk), using=using)

"""Mirroring only: after a change commits, refresh or drop its copy in Redis.

Task changes refresh the task's mirror entry; a deleted API token, or a saved
user, drops the cached token identities (tasks/api/authentication.py).
"""

from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from persistence import mirror
from tasks.api.authentication import forget_tokens
from tasks.models import Task


@receiver(post_save, sender=Task, dispatch_uid="persistence.mirror.on_commit")
def mirror_after_commit(sender: type[Task], instance: Task, using: str, **kwargs: Any) -> None:
    transaction.on_commit(partial(mirror.publish, mirror.snapshot_of(instance)), using=using)


@receiver(post_delete, sender=Task, dispatch_uid="persistence.mirror.forget_on_commit")
def forget_after_commit(sender: type[Task], instance: Task, using: str, **kwargs: Any) -> None:
    transaction.on_commit(partial(mirror.forget, instance.pk), using=using)


@receiver(post_delete, sender=Token, dispatch_uid="persistence.tokens.forget_deleted")
def forget_deleted_token(sender: type[Token], instance: Token, using: str, **kwargs: Any) -> None:
    transaction.on_commit(partial(forget_tokens, [instance.key]), using=using)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="persistence.tokens.forget_user")
def forget_tokens_of_saved_user(sender: type[Any], instance: Any, created: bool, using: str, **kwargs: Any) -> None:
    """A deactivated user, or one whose staff flags changed, must not be served from the cache."""
    if created:
        return
    keys = list(Token.objects.using(using).filter(user_id=instance.pk).values_list("key", flat=True))
    if keys:
        transaction.on_commit(partial(forget_tokens, keys), using=using)

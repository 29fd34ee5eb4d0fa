"""The purge ledger's "Restore from archive" and the deletion breaker's acknowledge button, through the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from retention.breaker import DeletionsSuspended, breaker
from retention.models import PurgeLedger
from retention.services import purge
from tasks import services
from tasks.audit import Channel
from tasks.models import Task, TaskHistory
from tests.retention.test_retention import finished

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def backups(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 100


def staff_with(django_user_model, *codenames, username="operator"):
    user = django_user_model.objects.create_user(username, password="pw-operator-1", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="retention", codename__in={"view_purgeledger", *codenames})
    )
    user.user_permissions.add(*Permission.objects.filter(codename="view_deletionbreaker"))
    return user


@pytest.fixture
def purged(make_task):
    task = finished(make_task, title="purged report")
    purge(actor="ops:test", channel=Channel.COMMAND, confirm=True)
    assert not Task.objects.filter(pk=task.pk).exists()
    return PurgeLedger.objects.get(task_id=task.pk)


def restore_url(entry):
    return reverse("admin:retention_purgeledger_restore", args=[entry.pk])


def test_a_superuser_restores_a_purged_task_from_the_ledger_after_confirming(admin_client, purged):
    listing = admin_client.get(reverse("admin:retention_purgeledger_changelist")).content.decode()
    assert restore_url(purged) in listing
    change = admin_client.get(reverse("admin:retention_purgeledger_change", args=[purged.pk])).content.decode()
    assert 'id="crux-ledger-restore"' in change
    page = admin_client.get(restore_url(purged))
    assert page.status_code == 200 and str(purged.task_id) in page.content.decode()

    unconfirmed = admin_client.post(restore_url(purged), {"reason": "customer asked for it"})
    assert unconfirmed.status_code == 200 and not Task.objects.filter(pk=purged.task_id).exists()
    no_reason = admin_client.post(restore_url(purged), {"reason": "", "confirm": "yes"})
    assert no_reason.status_code == 200 and not Task.objects.filter(pk=purged.task_id).exists()

    done = admin_client.post(restore_url(purged), {"reason": "customer asked for it (OPS-31)", "confirm": "yes"})
    assert done.status_code == 302 and done["Location"] == reverse("admin:tasks_task_change", args=[purged.task_id])
    task = Task.objects.get(pk=purged.task_id)
    assert task.title == "purged report"
    last = TaskHistory.objects.filter(task=task).order_by("-seq").first()
    assert (last.event, last.actor, last.channel) == ("unarchive", "admin", "admin")
    assert "customer asked for it (OPS-31)" in last.reason
    purged.refresh_from_db()
    assert purged.restored_at is not None and purged.restored_by == "admin"


def test_restore_from_the_ledger_needs_the_permission(client, django_user_model, purged):
    client.force_login(staff_with(django_user_model))
    listing = client.get(reverse("admin:retention_purgeledger_changelist"))
    assert listing.status_code == 200 and restore_url(purged) not in listing.content.decode()
    assert client.get(restore_url(purged)).status_code == 403
    assert client.post(restore_url(purged), {"reason": "sneaky", "confirm": "yes"}).status_code == 403
    assert not Task.objects.filter(pk=purged.task_id).exists()

    client.force_login(staff_with(django_user_model, "restore_purgeledger", username="restorer"))
    done = client.post(restore_url(purged), {"reason": "allowed to", "confirm": "yes"})
    assert done.status_code == 302 and Task.objects.filter(pk=purged.task_id).exists()


def trip(make_task, user, settings):
    settings.DELETE_SPIKE_THRESHOLD_PER_MINUTE = 0
    with pytest.raises(DeletionsSuspended):
        services.soft_delete(make_task().pk, user=user, channel=Channel.API, reason="script")
    assert breaker().is_tripped


def test_the_breaker_page_acknowledges_with_a_button(client, django_user_model, make_task, user, settings):
    trip(make_task, user, settings)
    page_url = reverse("admin:retention_deletionbreaker_changelist")
    ack_url = reverse("admin:retention_deletionbreaker_acknowledge")

    client.force_login(staff_with(django_user_model))
    page = client.get(page_url).content.decode()
    assert "deletion spike" in page and 'id="crux-acknowledge"' not in page
    assert 'name="action"' not in page  # no action dropdown any more
    assert client.post(ack_url).status_code == 403 and breaker().is_tripped

    client.force_login(staff_with(django_user_model, "acknowledge_deletionbreaker", username="oncall"))
    page = client.get(page_url).content.decode()
    assert f'action="{ack_url}"' in page and 'id="crux-acknowledge"' in page
    assert client.get(ack_url).status_code == 405  # a GET (a link, a prefetch) never acknowledges
    assert breaker().is_tripped
    done = client.post(ack_url, follow=True)
    assert "Deletion spike acknowledged" in done.content.decode()
    state = breaker()
    assert not state.is_tripped and state.acknowledged_by == "oncall"
    assert 'id="crux-acknowledge"' not in client.get(page_url).content.decode()


def test_the_acknowledge_button_needs_the_csrf_token(django_user_model, make_task, user, settings):
    from django.test import Client

    trip(make_task, user, settings)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_with(django_user_model, "acknowledge_deletionbreaker"))
    assert client.post(reverse("admin:retention_deletionbreaker_acknowledge")).status_code == 403
    assert breaker().is_tripped

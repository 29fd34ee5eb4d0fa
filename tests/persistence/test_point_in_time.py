"""Point-in-time recovery on PostgreSQL with pgBackRest, on a private cluster of the test's own (``bench.pg_cluster``).

The cluster archives its WAL continuously (``archive_command`` = ``pgbackrest archive-push``); a full backup is
taken after Crux's migrations; two tasks are submitted through Crux's own service, a second apart; the cluster
is stopped and restored to a time between the two. The first task is there with its history, the second is not:
what README's "Point-in-time recovery" promises; and ``verify_audit`` names the second as lost (the Redis mirror
saw it), so an operator knows what the recovery point cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from django.db import connection

from bench.pg_cluster import Cluster, missing_tools, private_cluster
from tests.conftest import free_port

pytestmark = pytest.mark.slow

SUBMIT = """
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from tasks import services
from tasks.audit import Channel
owner, _ = get_user_model().objects.get_or_create(username="pitr")
task = services.submit_task(owner=owner, actor=owner, channel=Channel.API, title=sys.argv[1])
print(json.dumps(str(task.pk)))
"""


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's WAL archiving: this test runs in the PostgreSQL suite")
    for tool in missing_tools():
        pytest.fail(f"{tool} is not installed (make test installs pgbackrest; initdb comes with PostgreSQL)")
    # fsync off: nothing of this cluster outlives the test.
    with private_cluster("crux-pitr-", free_port(), fsync=False) as cluster:
        yield cluster


def test_recovery_to_a_time_between_two_submits_keeps_the_first_and_not_the_second(cluster: Cluster) -> None:
    cluster.query("CREATE DATABASE crux", database="postgres")
    cluster.pgbackrest("stanza-create")
    cluster.manage("migrate", "--noinput")
    cluster.pgbackrest("backup", "--type=full")

    first = json.loads(cluster.manage("first, before the target", script=SUBMIT))
    time.sleep(1)
    (target,) = cluster.query("SELECT now()::text")[0]
    time.sleep(1)
    second = json.loads(cluster.manage("second, after the target", script=SUBMIT))
    cluster.wal_archived()

    cluster.stop()
    cluster.pgbackrest("restore", "--delta", "--type=time", f"--target={target}", "--target-action=promote")
    cluster.start()
    cluster.writable()

    titles = dict(cluster.query("SELECT id::text, title FROM tasks_task"))
    assert titles == {first: "first, before the target"}, titles
    assert second not in titles
    history = cluster.query(f"SELECT count(*) FROM tasks_taskhistory WHERE task_id = '{first}'")[0][0]
    assert history == 1
    # The audit says what the recovery point cost: the mirror saw the second task, which SQL no longer has.
    report = cluster.manage("verify_audit", expect=1)
    assert f"BROKEN task {second}: vanished: the Redis mirror saw it" in report, report
    assert "1 problem(s) in 1 subject(s); 1 task chains checked" in report, report

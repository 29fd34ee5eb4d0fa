"""A Python client generated from /api/schema/ by openapi-python-client does what the README shows, unpatched.

The client is generated once per run from the schema the server serves, into a temporary directory, and driven
against a live server: every answer must parse into the declared model (``raise_on_unexpected_status`` makes an
undeclared status fail the test), errors included.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token

from tests.api_support import grant

PACKAGE = "crux_generated_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """Generate the client from the schema (as served: public, JSON) and import it."""
    root = tmp_path_factory.mktemp("generated")
    schema = root / "schema.json"
    schema.write_text(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))
    tool = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [str(tool), "generate", "--path", str(schema), "--meta", "none", "--output-path", str(root / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (root / PACKAGE / "client.py").exists(), done.stdout + done.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.api.{name}")


def models() -> Any:
    return importlib.import_module(f"{PACKAGE}.models")


@pytest.fixture
def client(generated: ModuleType, live_db: Any, live_server: Any, user: Any) -> Any:
    grant(user, "soft_delete_task", "restore_task")
    token = Token.objects.create(user=user).key
    return generated.AuthenticatedClient(
        base_url=live_server.url, token=token, prefix="Token", raise_on_unexpected_status=True
    )


def test_the_generated_client_submits_lists_reads_and_follows_a_task(client: Any) -> None:
    m = models()
    body = m.TaskSubmitRequest(title="from a generated client", handler=m.HandlerEnum.ECHO)
    body.payload = m.TaskSubmitRequestPayload.from_dict({"message": "hello"})
    created = api("api_tasks_create").sync_detailed(client=client, body=body, idempotency_key="gen-1")
    assert created.status_code == 201 and isinstance(created.parsed, m.Task)
    task = created.parsed
    assert task.state == m.TaskStateEnum.QUEUED and task.payload == {"message": "hello"}
    replay = api("api_tasks_create").sync_detailed(client=client, body=body, idempotency_key="gen-1")
    assert replay.status_code == 200 and replay.parsed.id == task.id

    batch = m.TaskBatchRequest(tasks=[m.BatchItemRequest(title=f"batch {i}") for i in range(3)])
    submitted = api("api_tasks_batch_create").sync_detailed(client=client, body=batch)
    assert submitted.status_code == 201 and [r.created for r in submitted.parsed.tasks] == [True] * 3

    listed = api("api_tasks_list").sync_detailed(
        client=client,
        states=[m.ApiTasksListStatesItem.QUEUED, m.ApiTasksListStatesItem.RUNNING],  # sent as repeated keys
        ordering=[m.ApiTasksListOrderingItem.CREATED_AT_DESC],
        search="generated",
    )
    assert listed.status_code == 200
    assert [t.id for t in listed.parsed.results] == [task.id] and listed.parsed.count == 1
    newest_first = (
        api("api_tasks_list")
        .sync_detailed(client=client, ordering=[m.ApiTasksListOrderingItem.CREATED_AT_DESC])
        .parsed.results
    )
    assert [t.title for t in newest_first][:1] == ["batch 2"] and len(newest_first) == 4

    detail = api("api_tasks_retrieve").sync_detailed(task.id, client=client)
    assert detail.parsed.title == "from a generated client"
    history = api("api_tasks_history_list").sync_detailed(task.id, client=client).parsed.results
    assert [(row.state_from, row.state_to) for row in history] == [(None, m.TaskStateEnum.QUEUED)]
    output = m.TaskOutputRequest(output_type=m.OutputTypeEnum.LOG, content="a line")
    assert api("api_tasks_outputs_create").sync_detailed(task.id, client=client, body=output).status_code == 201
    outputs = api("api_tasks_outputs_list").sync_detailed(task.id, client=client).parsed.results
    assert [o.content for o in outputs] == ["a line"]
    located = api("api_tasks_locate_retrieve").sync_detailed(task.id, client=client)
    assert located.status_code == 200 and located.parsed.to_dict()
    handlers = api("api_handlers_list").sync_detailed(client=client).parsed
    assert "echo" in [h.name for h in handlers]


def test_the_generated_client_cancels_deletes_and_restores(client: Any) -> None:
    m = models()
    task = api("api_tasks_create").sync_detailed(client=client, body=m.TaskSubmitRequest(title="to cancel")).parsed
    cancelled = api("api_tasks_cancel_create").sync_detailed(
        task.id, client=client, confirm=True, body=m.ReasonRequest(reason="not needed")
    )
    assert cancelled.status_code == 200 and cancelled.parsed.state == m.TaskStateEnum.CANCELLED
    deleted = api("api_tasks_destroy").sync_detailed(
        task.id, client=client, confirm=True, body=m.DeleteRequest(reason="tidy up")
    )
    assert deleted.status_code == 200 and deleted.parsed.is_deleted
    restored = api("api_tasks_restore_create").sync_detailed(task.id, client=client, body=m.ReasonRequest())
    assert restored.status_code == 200 and not restored.parsed.is_deleted


def test_the_generated_client_parses_refusals(client: Any, generated: ModuleType, live_server: Any) -> None:
    m = models()
    bad = m.TaskSubmitRequest(title="bad", handler=m.HandlerEnum.SLEEP)
    bad.payload = m.TaskSubmitRequestPayload.from_dict({"seconds": "abc"})
    refused = api("api_tasks_create").sync_detailed(client=client, body=bad)
    assert refused.status_code == 400
    assert "payload" in refused.parsed.to_dict()  # field-keyed errors, as declared
    batch = m.TaskBatchRequest(tasks=[m.BatchItemRequest(title="ok"), m.BatchItemRequest(title="")])
    refused_batch = api("api_tasks_batch_create").sync_detailed(client=client, body=batch)
    assert refused_batch.status_code == 400 and "1" in refused_batch.parsed.to_dict()["tasks"]
    missing = api("api_tasks_retrieve").sync_detailed(UUID(int=1), client=client)
    assert missing.status_code == 404 and missing.parsed.detail
    task = api("api_tasks_create").sync_detailed(client=client, body=m.TaskSubmitRequest(title="keep")).parsed
    not_confirmed = api("api_tasks_cancel_create").sync_detailed(task.id, client=client, confirm=False)
    assert not_confirmed.status_code == 400 and "confirm" in not_confirmed.parsed.to_dict()

    anonymous = generated.Client(base_url=live_server.url, raise_on_unexpected_status=True)
    assert api("api_health_live_retrieve").sync_detailed(client=anonymous).parsed.status.value == "ok"
    assert api("api_tasks_list").sync_detailed(client=anonymous).status_code == 401

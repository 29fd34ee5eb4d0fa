"""The checks of `make lint` that keep the structure can fail: an upward import breaks the layers contract, and
mypy refuses a wrong argument to a service or a selector. (Their passing run is `make lint` itself.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
APPS = ("crux", "tasks", "persistence", "retention")


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the apps and the contracts, to break on purpose."""
    copy = tmp_path_factory.mktemp("layers")
    for app in APPS:
        shutil.copytree(ROOT / app, copy / app, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_layers_hold_as_committed(checkout: Path) -> None:
    result = run([str(BIN / "lint-imports")], checkout)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward", "contract"),
    [
        ("tasks/services/lifecycle.py", "from persistence import mirror", "tasks is not allowed to import persistence"),
        ("tasks/models.py", "from retention.models import PurgeLedger", "tasks is not allowed to import retention"),
        ("persistence/services.py", "from retention import breaker", "is not allowed to import retention"),
        ("retention/services.py", "from crux import locate", "retention is not allowed to import crux"),
        ("tasks/selectors/figures.py", "from tasks import services", "is not allowed to import tasks.services"),
    ],
)
def test_an_upward_import_breaks_a_contract(checkout: Path, module: str, upward: str, contract: str) -> None:
    path = checkout / module
    original = path.read_text()
    try:
        path.write_text(f"{upward}  # noqa: F401\n{original}")
        result = run([str(BIN / "lint-imports")], checkout)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    assert contract in result.stdout, result.stdout[-3000:]


def test_mypy_refuses_wrong_arguments_to_services_and_selectors(tmp_path: Path) -> None:
    caller = tmp_path / "wrong_calls.py"
    caller.write_text(
        "from tasks import selectors, services\n"
        "from tasks.audit import Channel\n"
        "services.cancel(123, actor=None, channel=Channel.API, reason='x')\n"
        "services.soft_delete('abc', user='system:x', channel=Channel.API, reason='x')\n"
        "selectors.find_visible_task(None, 'abc')\n"
    )
    result = run([str(BIN / "mypy"), "--no-error-summary", str(caller)], ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Argument 1 to "cancel" has incompatible type "int"' in result.stdout
    assert 'Argument "actor" to "cancel" has incompatible type "None"' in result.stdout
    assert 'Argument "user" to "soft_delete" has incompatible type "str"' in result.stdout
    assert 'Argument 1 to "find_visible_task" has incompatible type "None"' in result.stdout

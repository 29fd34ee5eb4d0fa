"""Every kind of process Crux starts freezes its start-up objects once it is ready (crux/memory.py), so that a full
collection of Python's garbage collector never walks them again: each kind is started from its own entry point in a
fresh interpreter, which reports how many objects are frozen before and after its hook."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import child_database_url
from tests.processes import ROOT

# Objects frozen, objects a collection still walks, and the URLconf modules loaded.
REPORT = (
    "import gc, sys; print(gc.get_freeze_count(), len(gc.get_objects()), "
    "' '.join(sorted(m for m in sys.modules if m.endswith('urls'))))"
)

CELERY = "from crux.celery import app; from celery import signals; BEFORE; "
# kind of process -> (how it starts and gets ready, the URLconf it serves, loaded before the freeze; None: none)
ENTRY_POINTS = {
    "web (gunicorn's post_worker_init)": (
        "import django; django.setup(); from crux import gunicorn_conf; BEFORE; gunicorn_conf.post_worker_init(None)",
        "crux.urls",
    ),
    "worker's pool process (Celery's worker_process_init)": (
        CELERY + "signals.worker_process_init.send(sender=None)",
        None,
    ),
    "worker's main process (Celery's worker_ready)": (
        CELERY + "signals.worker_ready.send(sender=None)",
        None,
    ),
    "stream (the ASGI module)": ("import django; django.setup(); BEFORE; import crux.asgi", "crux.streams.urls"),
}


def _run(code: str) -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "crux.settings", "DATABASE_URL": child_database_url()}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_each_kind_of_process_freezes_what_it_loaded_once_ready(kind: str) -> None:
    start, urlconf = ENTRY_POINTS[kind]
    before, after = _run(f"{start.replace('BEFORE', REPORT)}; {REPORT}")
    frozen_before, walked_before, *urls_before = before.split()
    frozen_after, walked_after, *urls_after = after.split()
    assert int(frozen_before) == 0
    # Everything alive when the hook ran (less its garbage) is frozen: a collection walks only what came after.
    assert int(frozen_after) > 0
    assert int(walked_after) < int(walked_before) / 50
    if urlconf is not None:
        assert urlconf not in urls_before
        assert urlconf in urls_after

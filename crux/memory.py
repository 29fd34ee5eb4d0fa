"""Python's cyclic garbage collector, told once a process is ready that what it loaded lives as long as it does.

A full collection walks every object the process holds: in a web worker, about 140,000 from start-up (modules,
Django's settings, models and URLconf, DRF's fields) against the few thousand that requests leave, and it stopped
the request it fell in for 65-125 ms, every few hundred to few thousand requests (BENCHMARKS.md, "a full
collection's pause"). ``gc.freeze()`` moves the objects alive now to a generation no collection walks again, so a
collection walks only what requests and tasks made since.
"""

from __future__ import annotations

import gc

from django.urls import get_resolver


def freeze_start_up_objects(*, urlconf: str | None = None) -> None:
    """Collect what start-up left as garbage, then freeze everything alive; called by each kind of process once it
    is ready to serve (gunicorn's ``post_worker_init``, Celery's ``worker_process_init`` and ``worker_ready``, the
    stream's ASGI module). A process that serves HTTP names its ``urlconf``, loaded first with the views it
    imports, as its first request would load them."""
    if urlconf is not None:
        get_resolver(urlconf).url_patterns  # noqa: B018  # the property imports the URLconf's modules
    gc.collect()
    gc.freeze()

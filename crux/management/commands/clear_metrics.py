"""Clear PROMETHEUS_MULTIPROC_DIR of the metric files of processes that are gone: the release step's fresh start."""

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Remove the prometheus-client multiprocess files (PROMETHEUS_MULTIPROC_DIR) of processes that have ended, "
        "before the web and worker processes start (the Procfile's release line): counters start again from zero, "
        "which Prometheus reads as a restart. Files of running processes are kept. Exit status: 0."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        directory = Path(settings.PROMETHEUS_MULTIPROC_DIR)
        removed = clear_dead_process_files(directory)
        self.stdout.write(f"clear_metrics: {len(removed)} file(s) of ended processes removed from {directory}")


def clear_dead_process_files(directory: Path) -> list[Path]:
    """Remove the files (``<type>_<pid>.db``) of processes that are gone; those of live processes stay, so a release
    run beside a running command does not reset what it counts."""
    removed = []
    for file in directory.glob("*.db"):
        pid = file.stem.rpartition("_")[2]
        if pid.isdigit() and _alive(int(pid)):
            continue
        file.unlink(missing_ok=True)
        removed.append(file)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

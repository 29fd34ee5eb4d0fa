"""Purge archives: a gzip file of JSON lines, one line per task with its history, outputs and metrics.

Written, flushed and fsynced (file and directory) before the purge deletes
anything; identified in the ledger by path and sha256 checksum.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from tasks.records import checksum, encode, task_entries

FORMAT = "crux-purge-archive/1"


class ArchiveError(Exception):
    """The archive could not be written or does not match its checksum."""


def archive_dir() -> Path:
    return Path(settings.BACKUP_DIR) / "purged"


def write_archive(task_ids: list[UUID], *, run_id: str, policy_note: str) -> tuple[Path, str]:
    """Write the archive for ``task_ids`` durably; returns (path, checksum). Raises ArchiveError."""
    directory = archive_dir()
    path = directory / f"purge-{timezone.now():%Y%m%dT%H%M%S}-{run_id}.jsonl.gz"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb") as gz:
                header = {"format": FORMAT, "created_at": timezone.now(), "run_id": run_id, "policies": policy_note}
                gz.write((encode(header) + "\n").encode())
                for entry in task_entries(task_ids):
                    gz.write((encode(entry) + "\n").encode())
            raw.flush()
            os.fsync(raw.fileno())
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ArchiveError(f"could not write purge archive {path}: {exc}") from exc
    return path, checksum(path)


def read_entry(path: Path, task_id: UUID, expected_checksum: str) -> dict[str, Any]:
    """The archived entry of one task, after checking the file against its ledger checksum."""
    if not path.exists():
        raise ArchiveError(f"archive {path} is missing")
    actual = checksum(path)
    if actual != expected_checksum:
        raise ArchiveError(f"archive {path} is corrupt: checksum {actual} != ledger {expected_checksum}")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        header = json.loads(next(lines))
        if header.get("format") != FORMAT:
            raise ArchiveError(f"{path} is not a Crux purge archive")
        for line in lines:
            entry = json.loads(line)
            if entry["task"]["pk"] == str(task_id):
                return entry
    raise ArchiveError(f"task {task_id} is not in archive {path}")

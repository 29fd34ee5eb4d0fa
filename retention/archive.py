"""Purge archives: a gzip file of JSON lines, one line per task with its history, outputs and metrics.

Written, flushed and fsynced (file and directory) before the purge deletes
anything; identified in the ledger by path and sha256 checksum. Where the storage
alias ``backups_copy`` is configured, each archive is also copied there (as
``purged/<name>``) and the copy read back and compared before the purge goes on;
an archive missing or corrupt here is read from that copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.utils import timezone

from tasks.records import checksum, encode, task_entries

FORMAT = "crux-purge-archive/1"
COPY_STORAGE = "backups_copy"

logger = logging.getLogger(__name__)


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
    digest = checksum(path)
    _copy_out(path, digest)
    return path, digest


def _copy_name(path: Path) -> str:
    return f"purged/{path.name}"


def _stored_checksum(name: str) -> str:
    with storages[COPY_STORAGE].open(name, "rb") as stored:
        return "sha256:" + hashlib.file_digest(stored, "sha256").hexdigest()


def _copy_out(path: Path, digest: str) -> None:
    """Copy the archive to the second location and compare the copy read back; ArchiveError if it differs."""
    if COPY_STORAGE not in settings.STORAGES:
        return
    storage = storages[COPY_STORAGE]
    try:
        with open(path, "rb") as original:
            name = storage.save(_copy_name(path), File(original, name=path.name))
        if _stored_checksum(name) != digest:
            storage.delete(name)
            raise ArchiveError(f"the copy of purge archive {path.name} in the second location does not match")
    except OSError as exc:
        raise ArchiveError(f"could not copy purge archive {path.name} to the second location: {exc}") from exc


def _fetch_copy(path: Path, expected_checksum: str) -> bool:
    """Bring the archive back from the second location if its copy matches the ledger (a corrupt file here is kept
    aside as ``.corrupt``); False if there is no such copy."""
    name = _copy_name(path)
    if COPY_STORAGE not in settings.STORAGES or not storages[COPY_STORAGE].exists(name):
        return False
    if _stored_checksum(name) != expected_checksum:
        raise ArchiveError(f"archive {path} is missing or corrupt here, and so is its copy in the second location")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.replace(path.with_name(path.name + ".corrupt"))
    partial = path.with_name(path.name + ".part")
    with storages[COPY_STORAGE].open(name, "rb") as stored, open(partial, "wb") as local:
        for block in iter(lambda: stored.read(1 << 20), b""):
            local.write(block)
    partial.replace(path)
    logger.warning("purge archive %s restored from the second location", path.name)
    return True


def read_entry(path: Path, task_id: UUID, expected_checksum: str) -> dict[str, Any]:
    """The archived entry of one task, after checking the file against its ledger checksum (from the second
    location if the file is missing or corrupt here)."""
    if not path.exists() and not _fetch_copy(path, expected_checksum):
        raise ArchiveError(f"archive {path} is missing")
    actual = checksum(path)
    if actual != expected_checksum:
        if not _fetch_copy(path, expected_checksum):
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

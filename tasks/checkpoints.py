"""Audit checkpoints: every task's chain head and the purge ledger's, signed and kept outside the database.

A keyed chain cannot be recomputed without the key, but a task can still be
removed whole (task, history, outputs): then there is no chain left to check.
A checkpoint remembers it. Each lists every task's (id, last seq, head hash)
and the purge ledger's head, in a gzip JSON-lines file in
``AUDIT_CHECKPOINT_DIR`` (beside the backups), signed as a whole with the
checkpoint key (``tasks.keys``). Beat writes one periodically and the backup
writes one with each backup. A task of the previous checkpoint that has left
the database without a valid tombstone is carried into the next one, so the
newest checkpoint always still names it. ``verify_audit`` compares the
database with the newest valid checkpoint; ``locate`` looks tasks up in it.
"""

from __future__ import annotations

import gzip
import hmac
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks import hooks, keys
from tasks.models import Task

logger = logging.getLogger(__name__)

FORMAT = "crux-audit-checkpoint/1"
_GLOB = "checkpoint-*.jsonl.gz"


class CheckpointError(Exception):
    """A checkpoint file is unreadable, not a checkpoint, or its signature does not verify."""


@dataclass(frozen=True)
class Entry:
    """One task's chain as a checkpoint saw it."""

    task_id: UUID
    seq: int
    head: str


@dataclass
class Checkpoint:
    """A checkpoint file whose signature verified; ``entries()`` reads its tasks in id order."""

    path: Path
    created_at: datetime
    key_id: str
    backup: str
    ledger: dict[str, Any] | None
    tasks: int
    carried: list[str] = field(default_factory=list)

    # With ``open_checkpoint(path, find=task_id)``: that task's entry, if the checkpoint has one.
    found: Entry | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def entries(self) -> Iterator[Entry]:
        """The tasks, in id order (read again from the file, whose signature ``open_checkpoint`` verified)."""
        try:
            with gzip.open(self.path, "rb") as lines:
                for line in lines:
                    if line.startswith(b"["):
                        task_id, seq, head = json.loads(line)
                        yield Entry(UUID(task_id), seq, head)
        except (OSError, EOFError, ValueError) as exc:
            raise CheckpointError(f"{self.name}: unreadable ({exc})") from exc


def checkpoint_dir() -> Path:
    return Path(settings.AUDIT_CHECKPOINT_DIR)


def open_checkpoint(path: Path, *, find: UUID | None = None) -> Checkpoint:
    """Read a checkpoint, verifying its whole signature in one pass (and looking for task ``find`` on the way).

    Task lines are not decoded, only counted and signed: the pass costs about a gunzip of the file.
    """
    needle = f'["{find.hex}",'.encode() if find else None
    tasks, trailer, found, signature = 0, {}, None, None
    try:
        with gzip.open(path, "rb") as lines:
            header_line = next(lines, b"")
            header = json.loads(header_line or b"null")
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise CheckpointError(f"{path.name} is not a Crux audit checkpoint")
            mac = keys.signer(keys.CHECKPOINT, header["key_id"])
            mac.update(header_line)
            for line in lines:
                if line.startswith(b"["):
                    tasks += 1
                    if needle is not None and find is not None and line.startswith(needle):
                        found = Entry(find, *json.loads(line)[1:])
                elif line.startswith(b'{"mac"'):
                    signature = json.loads(line)["mac"]
                    break
                else:
                    trailer = json.loads(line)
                mac.update(line)
    except keys.UnknownKey as exc:
        raise CheckpointError(f"{path.name}: signed with an unknown key ({exc})") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path.name}: unreadable ({exc})") from exc
    if not isinstance(signature, str):
        raise CheckpointError(f"{path.name}: truncated (no signature)")
    if not hmac.compare_digest(signature, mac.hexdigest()):
        raise CheckpointError(f"{path.name}: signature invalid (forged or altered)")
    created = parse_datetime(str(header.get("created_at", "")))
    if created is None:
        raise CheckpointError(f"{path.name}: no creation time")
    return Checkpoint(
        path,
        created,
        header["key_id"],
        header.get("backup", ""),
        trailer.get("ledger"),
        tasks,
        trailer.get("carried", []),
        found,
    )


def newest(*, find: UUID | None = None) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint whose signature verifies (with task ``find``'s entry, if asked), and a message for
    each newer one that does not."""
    problems: list[str] = []
    for path in sorted(checkpoint_dir().glob(_GLOB), reverse=True):
        try:
            return open_checkpoint(path, find=find), problems
        except CheckpointError as exc:
            problems.append(str(exc))
    return None, problems


def _database_heads(batch_size: int) -> Iterator[Entry]:
    rows = Task.objects.order_by("pk").values_list("id", "history_count", "history_head")
    for task_id, count, head in rows.iterator(chunk_size=batch_size):
        yield Entry(task_id, count, head)


def _merged(previous: Checkpoint | None, batch_size: int, carried: list[str]) -> Iterator[Entry]:
    """Every task in the database, plus each task of ``previous`` gone without a valid tombstone, in id order."""
    old = previous.entries() if previous else iter(())
    ledger = hooks.purge_ledger()
    pending = next(old, None)
    for entry in _database_heads(batch_size):
        while pending is not None and pending.task_id <= entry.task_id:
            if pending.task_id < entry.task_id and not _tombstoned(ledger, pending):
                carried.append(str(pending.task_id))
                yield pending
            pending = next(old, None)
        yield entry
    while pending is not None:
        if not _tombstoned(ledger, pending):
            carried.append(str(pending.task_id))
            yield pending
        pending = next(old, None)


def _tombstoned(ledger: hooks.SignedLedger | None, entry: Entry) -> bool:
    """A valid tombstone accounts for ``entry``: it was purged with at least the chain the checkpoint saw."""
    tombstone = ledger.tombstones([entry.task_id]).get(entry.task_id) if ledger else None
    return tombstone is not None and covers(tombstone, entry)


def covers(tombstone: tuple[int, str], entry: Entry) -> bool:
    count, head = tombstone
    return count > entry.seq or (count == entry.seq and head == entry.head)


def write_checkpoint(*, backup: Path | None = None, batch_size: int = 2000) -> Checkpoint:
    """Write a signed checkpoint of every chain head and the ledger's, durably (tmp, fsync, rename); rotate old ones."""
    directory = checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    previous, _ = newest()
    created = timezone.now()
    path = directory / f"checkpoint-{created:%Y%m%dT%H%M%S%f}.jsonl.gz"
    tmp = path.with_name(path.name + ".tmp")
    key_id = keys.current_key_id()
    mac = keys.signer(keys.CHECKPOINT, key_id)
    carried: list[str] = []
    tasks = 0
    with open(tmp, "xb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as out:

            def emit(record: Any) -> None:
                line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
                mac.update(line)
                out.write(line)

            emit(
                {
                    "format": FORMAT,
                    "created_at": created.isoformat(),
                    "key_id": key_id,
                    "backup": str(backup or ""),
                    "previous": previous.name if previous else "",
                }
            )
            for entry in _merged(previous, batch_size, carried):
                emit([entry.task_id.hex, entry.seq, entry.head])
                tasks += 1
            ledger = hooks.purge_ledger()
            ledger_head = ledger.head() if ledger else None
            emit({"ledger": ledger_head, "carried": carried})
            out.write((json.dumps({"mac": mac.hexdigest()}) + "\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    if carried:
        logger.error("audit checkpoint: %s task(s) vanished without a tombstone: %s", len(carried), carried[:20])
    rotate()
    return Checkpoint(path, created, key_id, str(backup or ""), ledger_head, tasks, carried)


def rotate(now: datetime | None = None) -> list[Path]:
    """Delete checkpoints older than BACKUP_RETENTION_DAYS, never the newest one."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.BACKUP_RETENTION_DAYS)
    found = sorted(checkpoint_dir().glob(_GLOB))
    removed = []
    for path in found[:-1]:
        if datetime.fromtimestamp(path.stat().st_mtime, tz=cutoff.tzinfo) < cutoff:
            path.unlink()
            removed.append(path)
    return removed

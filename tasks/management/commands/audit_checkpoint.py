"""Write a signed audit checkpoint now (beat writes one every AUDIT_CHECKPOINT_SECONDS, and each backup one)."""

from typing import Any

from django.core.management.base import BaseCommand

from tasks.checkpoints import write_checkpoint


class Command(BaseCommand):
    help = (
        "Write a signed checkpoint of every task's history chain head and the purge ledger's head to "
        "AUDIT_CHECKPOINT_DIR, outside the database: verify_audit then names a task removed whole or a chain "
        "cut or rewritten since. Exit status: 0 written, 1 failed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            written = write_checkpoint()
        except OSError as exc:
            self.stderr.write(f"audit_checkpoint failed: {exc}")
            raise SystemExit(1) from None
        carried = f"; {len(written.carried)} vanished task(s) carried forward" if written.carried else ""
        self.stdout.write(f"audit_checkpoint: {written.path} ({written.tasks} tasks){carried}")

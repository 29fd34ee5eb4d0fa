"""Acknowledge a deletion spike so that deletions are allowed again."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from retention.breaker import acknowledge, breaker


class Command(BaseCommand):
    help = (
        "Show the deletion circuit breaker and, with --actor, acknowledge a tripped one so deletions resume. "
        "Exit status: 0 deletions allowed (now or already), 1 still tripped, 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--actor", help="who acknowledges (recorded); without it the state is only shown")

    def handle(self, *args: Any, actor: str | None, **options: Any) -> None:
        state = breaker()
        if not state.is_tripped:
            self.stdout.write("deletions allowed: the breaker is not tripped")
            return
        self.stdout.write(f"TRIPPED at {state.tripped_at:%Y-%m-%d %H:%M:%S}Z: {state.tripped_reason}")
        if not actor:
            self.stdout.write("run again with --actor NAME to acknowledge and allow deletions")
            raise SystemExit(1)
        acknowledge(actor)
        self.stdout.write(f"acknowledged by {actor}: deletions allowed again")
